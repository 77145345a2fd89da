"""What a check is asked to do (:class:`RunConfig`; it crosses to the worker processes as a
dict, inside :class:`parity.context.ModelContext`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from parity.paths import find_project
from parity.workers import DEFAULT_TIMEOUT
from parity.zoo import DEFAULT_MODEL

Progress = Callable[[str], None]


def default_tolerances() -> Path:
    """The project's tolerance file (default: the bundled one)."""
    return find_project().tolerances


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What to check. ``None`` means the default for every field."""

    model: str = DEFAULT_MODEL
    runtimes: Sequence[str] | None = None
    fixtures: Path | None = None
    weights: str | None = None
    tolerances: Path | None = None
    taps: Sequence[str] | None = None
    threads: int = 2
    rebuild: bool = False
    cache_root: Path | None = None
    goldens: Path | None = None
    #: Read artifacts and goldens from this bundle instead of exporting (no torch/TF needed).
    bundle: Path | None = None
    #: Also check a file made elsewhere (parity.external): path, runtime, tap map, layout.
    artifact: Path | None = None
    artifact_runtime: str | None = None
    tap_map: Path | None = None
    input_layout: str | None = None
    #: A variant that does not apply (``n/a``) fails the run.
    strict: bool = False
    #: Backends run side by side in worker processes (``None``: one per core; 1: one at
    #: a time). ``run_parity`` always runs them in workers.
    jobs: int | None = None
    #: Seconds one task (an export, a variant's run) may take before its worker is killed.
    timeout: float = DEFAULT_TIMEOUT

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (paths as strings), for :meth:`from_dict` in another process."""
        return {
            k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> RunConfig:
        """The config :meth:`to_dict` wrote (unknown keys are an error: same parity both
        sides)."""
        paths = {f.name for f in dataclasses.fields(cls) if "Path" in str(f.type)}
        sequences = {f.name for f in dataclasses.fields(cls) if "Sequence" in str(f.type)}
        values: dict[str, Any] = {}
        for key, value in fields.items():
            if value is not None and key in paths:
                value = Path(value)
            elif value is not None and key in sequences:
                value = tuple(value)
            values[key] = value
        return cls(**values)
