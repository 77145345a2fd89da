"""The gate's configuration: ``[tool.parity]`` in pyproject.toml, or a TOML file.

Example::

    [tool.parity]
    models = ["mobilenet_v2", "resnet18"]
    runtimes = ["onnxruntime", "keras", "litert"]
    report = "parity-report"      # folder for JSON, Markdown, JUnit XML and HTML
    live = true                   # also compare with torch now, not only with goldens
    # fixtures, tolerances, goldens: paths, default to the bundled ones
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

from parity.errors import ParityError
from parity.paths import project_root

_KEYS = {"models", "runtimes", "report", "live", "fixtures", "tolerances", "goldens", "threads"}


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
    source: str = "<defaults>"


def _table(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ParityError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ParityError(f"{path}: not valid TOML ({exc})") from None
    table = data.get("tool", {}).get("parity", data.get("parity"))
    if table is None and path.name != "pyproject.toml":
        table = data  # a dedicated file may hold the keys at top level
    return dict(table or {})


def load_gate_config(path: Path | None = None) -> GateConfig:
    """Read the gate config from ``path`` or the project's pyproject.toml (if it has one)."""
    if path is None:
        candidate = project_root() / "pyproject.toml"
        if not candidate.is_file():
            return GateConfig()
        path = candidate
    table = _table(path)
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
        source=str(path),
    )
