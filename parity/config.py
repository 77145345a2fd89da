"""The gate's configuration: ``[tool.parity]`` in pyproject.toml, or a TOML file.

Example::

    [tool.parity]
    models = ["mobilenet_v2", "resnet18"]
    runtimes = ["onnxruntime", "keras", "litert"]
    report = "parity-report"      # folder for JSON, Markdown, JUnit XML and HTML
    live = true                   # also compare with torch now, not only with goldens
    strict = false                # true: a variant that does not apply (n/a) fails the gate
    # cards (default "parity/models"), fixtures, tolerances, goldens (default
    # "parity/goldens"): paths relative to this file; unset ones come from the bundle
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from parity.errors import ParityError
from parity.paths import find_project, parity_table

#: Keys of the gate's ``[tool.parity]`` table (``cards``, ``fixtures``, ``tolerances`` and
#: ``goldens`` are also read by :func:`parity.paths.find_project` for every command).
_KEYS = {
    "models", "runtimes", "report", "live", "fixtures", "tolerances", "goldens", "threads",
    "cards", "strict",
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class GateConfig:
    """What ``parity check`` runs."""

    models: tuple[str, ...] = ("mobilenet_v2",)
    runtimes: tuple[str, ...] | None = None
    report: Path | None = None
    live: bool = True
    fixtures: Path | None = None
    tolerances: Path | None = None
    goldens: Path | None = None
    threads: int = 2
    strict: bool = False
    source: str = "<defaults>"


def load_gate_config(path: Path | None = None) -> GateConfig:
    """Read the gate config from ``path`` or the project's config file (if it has one)."""
    if path is None:
        path = find_project().config
        if path is None:
            return GateConfig()
    if not path.is_file():
        raise ParityError(f"{path}: config file not found")
    table = parity_table(path) or {}
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ParityError(f"{path}: unknown parity config keys {unknown}; known: {sorted(_KEYS)}")
    base = path.parent

    def as_path(key: str) -> Path | None:
        return base / table[key] if key in table else None

    models = table.get("models", ["mobilenet_v2"])
    runtimes = table.get("runtimes")
    if not isinstance(models, list) or (runtimes is not None and not isinstance(runtimes, list)):
        raise ParityError(f"{path}: 'models' and 'runtimes' must be lists of names")
    return GateConfig(
        models=tuple(models),
        runtimes=tuple(runtimes) if runtimes else None,
        report=as_path("report"),
        live=bool(table.get("live", True)),
        fixtures=as_path("fixtures"),
        tolerances=as_path("tolerances"),
        goldens=as_path("goldens"),
        threads=int(table.get("threads", 2)),
        strict=bool(table.get("strict", False)),
        source=str(path),
    )
