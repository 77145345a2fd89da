"""The gate's configuration: ``[tool.parity]`` in pyproject.toml, or a TOML file.

Example::

    [tool.parity]
    models = ["mobilenet_v2", "resnet18"]
    runtimes = ["onnxruntime", "keras", "litert"]
    report = "parity-report"      # folder for JSON, Markdown, JUnit XML and HTML
    live = true                   # also compare with torch now, not only with goldens
    strict = false                # true: a variant that does not apply (n/a) fails the gate
    # the files the project ships, checked on every run like the built-in variants (runtime,
    # input layout and taps detected when not given; paths relative to this file):
    artifacts = [{path = "dist/model.tflite", model = "mobilenet_v2", taps = "dist/taps.toml"}]
    # cards (default "parity/models"), fixtures, tolerances, goldens (default
    # "parity/goldens"): paths relative to this file; unset ones come from the bundle
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from parity.paths import find_project
from parity.schema import (
    ConfigError,
    Field,
    boolean,
    check,
    integer,
    list_of,
    read_config,
    string,
    table,
)
from parity.zoo import DEFAULT_MODEL

_NAMES = list_of(string(), nonempty=True)

#: One file the project ships (``[tool.parity] artifacts``): what ``--artifact`` and its
#: options say on the command line.
_ARTIFACT = table(
    {
        "path": string(required=True),
        "model": string(),
        "runtime": string(),
        "layout": string(choices=("NCHW", "NHWC")),
        "taps": string(),
    }
)

#: ``[tool.parity]``: a new key is one line here (and a field of :class:`GateConfig`).
GATE_SCHEMA: dict[str, Field] = {
    "models": _NAMES,
    "runtimes": _NAMES,
    "report": string(),
    "live": boolean(),
    "fixtures": string(),
    "tolerances": string(),
    "goldens": string(),
    "threads": integer(ge=1, le=1024),
    "cards": string(),
    "strict": boolean(),
    "artifacts": list_of(_ARTIFACT),
}


@dataclasses.dataclass(frozen=True)
class ShippedArtifact:
    """A file the project ships: checked against its model on every ``parity check``."""

    path: Path
    model: str | None = None
    runtime: str | None = None
    layout: str | None = None
    taps: Path | None = None


@dataclasses.dataclass(frozen=True)
class GateConfig:
    """What ``parity check`` runs."""

    models: tuple[str, ...] = (DEFAULT_MODEL,)
    runtimes: tuple[str, ...] | None = None
    report: Path | None = None
    live: bool = True
    fixtures: Path | None = None
    tolerances: Path | None = None
    goldens: Path | None = None
    threads: int = 2
    strict: bool = False
    artifacts: tuple[ShippedArtifact, ...] = ()
    source: str = "<defaults>"

    def shipped(self, model: str) -> list[ShippedArtifact]:
        """The listed files of ``model`` (a file without a model belongs to the only one)."""
        return [a for a in self.artifacts if (a.model or self.models[0]) == model]


def _table(path: Path) -> dict[str, Any]:
    data = read_config(path, "config file")
    tool = data.get("tool")
    table_ = tool.get("parity") if isinstance(tool, dict) else None
    where = "tool.parity"
    if table_ is None:
        table_, where = data.get("parity"), "parity"
    if table_ is None:
        if path.name == "pyproject.toml":
            return {}
        table_, where = data, ""  # a dedicated file may hold the keys at top level
    check(table_, table(GATE_SCHEMA), path, where)
    return dict(table_)


def load_gate_config(path: Path | None = None) -> GateConfig:
    """Read the gate config from ``path`` or the project's config file (if it has one)."""
    if path is None:
        path = find_project().config
        if path is None:
            return GateConfig()
    table_ = _table(path)
    base = path.parent

    def as_path(key: str) -> Path | None:
        return base / table_[key] if key in table_ else None

    runtimes = table_.get("runtimes")
    models = tuple(table_.get("models", [DEFAULT_MODEL]))
    artifacts = []
    for index, entry in enumerate(table_.get("artifacts", [])):
        if "model" not in entry and len(models) != 1:
            raise ConfigError(
                f"{path}: artifacts[{index}] ({entry['path']}): say which model it is "
                f"(model = ...); the gate checks {len(models)} models"
            )
        taps = entry.get("taps")
        artifacts.append(
            ShippedArtifact(
                base / entry["path"], entry.get("model"), entry.get("runtime"),
                entry.get("layout"), base / taps if taps else None,
            )
        )  # fmt: skip
    return GateConfig(
        models=models,
        runtimes=tuple(runtimes) if runtimes else None,
        report=as_path("report"),
        live=table_.get("live", True),
        fixtures=as_path("fixtures"),
        tolerances=as_path("tolerances"),
        goldens=as_path("goldens"),
        threads=table_.get("threads", 2),
        strict=table_.get("strict", False),
        artifacts=tuple(artifacts),
        source=str(path),
    )
