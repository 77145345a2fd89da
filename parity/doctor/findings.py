"""The doctor's result type: one :class:`Finding` per check, and its text rendering."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

OK, PROBLEM, SKIPPED = "ok", "problem", "skipped"


@dataclasses.dataclass
class Finding:
    """One check's verdict: status, one-line cause, the evidence, and the fix (if any)."""

    name: str
    status: str
    cause: str
    evidence: dict[str, Any] = dataclasses.field(default_factory=dict)
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status != PROBLEM

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "cause": self.cause,
            "evidence": _jsonable(self.evidence),
            "fix": self.fix,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def evidence_lines(finding: Finding, width: int = 100) -> list[str]:
    """Evidence as short ``key: value`` lines for a table cell."""
    lines = []
    for key, value in finding.evidence.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k}={_short(v)}" for k, v in value.items())
            text = f"{key}: {inner}"
        else:
            text = f"{key}: {_short(value)}"
        lines.append(text if len(text) <= width else text[: width - 3] + "...")
    return lines


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        more = ", ..." if len(value) > 6 else ""
        return "[" + ", ".join(_short(v) for v in value[:6]) + more + "]"
    return str(value)
