"""The view model every report format shows: a gate dict normalised into checks and taps.

A *check* is one variant in one mode: ``ort_dynamo vs torch`` (live) or
``ort_dynamo vs golden`` (regression); each has its taps, its failed metrics (with a
readable reason from the numbers), the taps a foreign artifact left unmatched, and the
``n/a`` rows of the variants that did not apply. Plus the number and text formatting the
formats share. Reads only the dict (standard library only, no numpy).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Metric -> the budget key that limits it: mirrors parity.tolerances.BUDGET_KEYS, which this
# module does not import (it must stay importable without numpy).
_BUDGET_OF = {
    "max_abs_norm": "max_abs_norm",
    "max_rel": "max_rel",
    "cosine": "min_cosine",
    "sqnr_db": "min_sqnr_db",
    "top1_agreement": "min_top1_agreement",
    "top5_overlap": "min_top5_overlap",
}


# --------------------------------------------------------------------------------------
# The dict, normalised: one CheckView per variant+mode, one TapView per tap.


@dataclasses.dataclass(frozen=True)
class TapView:
    index: int
    name: str
    where: str
    passed: bool
    failing: frozenset[str]  # metric names that break their budget ("max_abs_norm", ...)
    reasons: tuple[str, ...]  # one readable phrase per broken budget
    max_abs_norm: float | None
    budget_abs: float | None
    one_minus_cos: float | None
    budget_cos: float | None  # as a 1 - cosine limit
    sqnr_db: float | None
    top1: float | None
    top5: float | None
    worst_image: str
    sources: Mapping[str, str]

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) or "within budget"


@dataclasses.dataclass(frozen=True)
class CheckView:
    model: str
    variant: str
    family: str
    mode: str
    passed: bool
    error: str | None
    seconds: float | None
    explanation: str
    taps: tuple[TapView, ...]
    first: TapView | None
    artifact: Mapping[str, Any] | None

    @property
    def vs(self) -> str:
        return "torch" if self.mode == "live" else "golden"

    @property
    def label(self) -> str:
        return f"{self.variant} vs {self.vs}"

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        return "pass" if self.passed else "fail"

    @property
    def n_failing(self) -> int:
        return sum(not t.passed for t in self.taps)

    @property
    def unmatched(self) -> list[tuple[str, str]]:
        """(tap, reason) of the taps a foreign artifact did not yield: not in the verdict."""
        matching = (self.artifact or {}).get("tap_matching") or ()
        return [
            (str(m.get("tap")), one_line(str(m.get("evidence", "")), 200))
            for m in matching
            if isinstance(m, Mapping) and m.get("how") == "unmatched"
        ]

    def unmatched_lines(self) -> list[str]:
        """One line per unmatched tap, for every report format."""
        return [
            f"tap '{tap}' unmatched, left out of the verdict: {why}" for tap, why in self.unmatched
        ]

    @property
    def worst(self) -> float | None:
        values = [t.max_abs_norm for t in self.taps if t.max_abs_norm is not None]
        if not values:
            return None
        bad = [v for v in values if not math.isfinite(v)]
        return bad[0] if bad else max(values)


def as_number(value: Any) -> float | None:
    """A number from the JSON (``"inf"``/``"nan"`` strings included), else None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _failed_metric(failure: str) -> str:
    """The metric a verdict's failure line is about (``judge`` writes cosine as 1-cosine)."""
    token = failure.split(" ", 1)[0]
    return "cosine" if token == "1-cosine" else token


def _reason(failure: str, metrics: Mapping[str, Any], budget: Mapping[str, Any]) -> str:
    """A readable phrase for one broken budget, from the numbers rather than the string
    (``judge`` prints cosine with 3 digits: '1 < 1'); the string is the fallback."""
    metric = _failed_metric(failure)
    value, limit = as_number(metrics.get(metric)), as_number(budget.get(_BUDGET_OF.get(metric, "")))
    if value is None or limit is None:
        return failure
    if metric == "cosine":
        return f"1-cosine {sci(1.0 - value)} > {lim(1.0 - limit)}"
    if metric == "sqnr_db":
        return f"SQNR {fixed(value, '.1f')} dB < {limit:g} dB"
    if metric in ("top1_agreement", "top5_overlap"):
        return f"{'top-1' if metric == 'top1_agreement' else 'top-5'} {value:.2f} < {limit:g}"
    return f"{metric} {sci(value)} > {lim(limit)}"


def _tap(index: int, data: Mapping[str, Any]) -> TapView:
    metrics: Mapping[str, Any] = data.get("metrics") or {}
    budget: Mapping[str, Any] = data.get("budget") or {}
    failures = [str(f) for f in data.get("failures") or ()]
    cosine = as_number(metrics.get("cosine"))
    min_cosine = as_number(budget.get("min_cosine"))
    module = str(data.get("module") or "<root>")
    return TapView(
        index=index,
        name=str(data.get("name", f"#{index}")),
        where=f"{data.get('point', 'output')} of {module}",
        passed=bool(data.get("passed", not failures)),
        failing=frozenset(_failed_metric(f) for f in failures),
        reasons=tuple(_reason(f, metrics, budget) for f in failures),
        max_abs_norm=as_number(metrics.get("max_abs_norm")),
        budget_abs=as_number(budget.get("max_abs_norm")),
        one_minus_cos=None if cosine is None else max(0.0, 1.0 - cosine),
        budget_cos=None if min_cosine is None else 1.0 - min_cosine,
        sqnr_db=as_number(metrics.get("sqnr_db")),
        top1=as_number(metrics.get("top1_agreement")),
        top5=as_number(metrics.get("top5_overlap")),
        worst_image=str(data.get("worst_image_name", metrics.get("worst_image", ""))),
        sources={str(k): str(v) for k, v in (data.get("budget_sources") or {}).items()},
    )


def not_applicable_rows(model: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(variant, vs, reason) of the variants that did not apply (``n/a`` rows, not checks)."""
    return [
        (str(e.get("name", "?")), "torch" if e.get("mode", "live") == "live" else "golden",
         str(e.get("reason") or ""))
        for e in model.get("variants") or ()
        if e.get("status") == "n/a"
    ]  # fmt: skip


def _checks(model: Mapping[str, Any]) -> list[CheckView]:
    checks = []
    for entry in model.get("variants") or ():
        if entry.get("status") == "n/a":
            continue
        taps = tuple(_tap(i, t) for i, t in enumerate(entry.get("taps") or ()))
        named = entry.get("first_divergent_tap")
        first = next((t for t in taps if t.name == named), None) if named is not None else None
        if first is None:
            first = next((t for t in taps if not t.passed), None)
        error = entry.get("error")
        checks.append(
            CheckView(
                model=str(model.get("model", "?")),
                variant=str(entry.get("name", "?")),
                family=str(entry.get("family", "")),
                mode=str(entry.get("mode", "live")),
                passed=bool(entry.get("passed")) and error is None,
                error=None if error is None else str(error),
                seconds=as_number(entry.get("seconds")),
                explanation=str(entry.get("explanation") or ""),
                taps=taps,
                first=first,
                artifact=entry.get("artifact"),
            )
        )
    return checks


def models_of(
    gate: Mapping[str, Any], problems_first: bool = False
) -> list[tuple[Mapping[str, Any], list[CheckView]]]:
    """Each model with its checks: in run order, or errors, then failures, then passes
    (run order within each) for the views a person reads top-down."""
    models = [(m, _checks(m)) for m in gate.get("models") or ()]
    if problems_first:
        rank = {"error": 0, "fail": 1, "pass": 2}
        models = [(m, sorted(cs, key=lambda c: rank[c.status])) for m, cs in models]
    return models


def count_statuses(checks: Iterable[CheckView]) -> dict[str, int]:
    counts = {"pass": 0, "fail": 0, "error": 0}
    for check in checks:
        counts[check.status] += 1
    return counts


def gate_passed(gate: Mapping[str, Any], models: Sequence[tuple[Any, list[CheckView]]]) -> bool:
    return bool(gate.get("passed", True)) and all(c.passed for _, cs in models for c in cs)


def tally(counts: Mapping[str, int]) -> str:
    """``9 of 12 checks failed, 1 errored`` / ``12 checks passed``."""
    total = sum(counts.values())
    if counts["fail"] == 0 and counts["error"] == 0:
        return f"{total} check{'s' if total != 1 else ''} passed"
    parts = []
    if counts["fail"]:
        parts.append(f"{counts['fail']} of {total} checks failed")
    if counts["error"]:
        parts.append(
            f"{counts['error']} of {total} errored" if not parts else f"{counts['error']} errored"
        )
    return ", ".join(parts)


# --------------------------------------------------------------------------------------
# Number formatting.


def sci(value: float | None, digits: int = 2) -> str:
    """``1.56e-06``; ``0`` for zero; ``inf``/``nan``; ``-`` for no value."""
    if value is None:
        return "-"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0"
    return format(value, f".{digits}e")


def lim(value: float | None) -> str:
    """A budget, with no trailing zeros: ``1e-06``, ``2.5e-06``."""
    text = sci(value, 3)
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"


def fixed(value: float | None, spec: str) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)


def seconds_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} s"


def topk_text(tap: TapView) -> str:
    if tap.top1 is None and tap.top5 is None:
        return ""
    return f"{fixed(tap.top1, '.2f')} / {fixed(tap.top5, '.2f')}"


def short_sha(sha: Any, n: int = 12) -> str:
    return str(sha or "-")[:n]


def one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def artifact_line(artifact: Mapping[str, Any] | None, sha: bool = True) -> str:
    if not artifact:
        return ""
    size = as_number(artifact.get("bytes"))
    parts = [str(artifact.get("exporter_name") or artifact.get("exporter") or "")]
    if size is not None:
        parts.append(f"{size / 1e6:.1f} MB")
    if sha and artifact.get("sha256"):
        parts.append(f"sha256 {short_sha(artifact['sha256'])}")
    return ", ".join(p for p in parts if p)


def preprocess_line(spec: Mapping[str, Any]) -> str:
    """``resize 256 bilinear aa, crop 224x224, mean/std, RGB NCHW float32``."""
    if not spec:
        return ""

    def dims(value: Any) -> str:
        return "none" if not value else "x".join(str(v) for v in value)

    std = spec.get("std") or [1.0]
    norm = "mean/std" if not math.isclose(float(std[0]), 1.0) else "no norm"
    aa = "aa" if spec.get("antialias") else "no-aa"
    return (
        f"resize {dims(spec.get('resize'))} {spec.get('resize_filter', '')} {aa}, "
        f"crop {dims(spec.get('crop'))}, {norm}, {spec.get('channel_order', '')} "
        f"{spec.get('layout', '')} {spec.get('dtype', '')}"
    )


_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def xml_text(text: Any) -> str:
    """Text XML 1.0 can carry (ElementTree escapes markup but not control characters)."""
    return _XML_ILLEGAL.sub("?", str(text))
