"""Converter environments: a converter whose pins clash with parity's runs in its own venv.

A converter spec is data: ``parity/converters/<name>.toml`` ships inside the package with
the converter's requirements, every version exact (the closure pip resolved and that was
tested), the Python versions it was tested on and a one-line import check.
``parity converters install NAME`` makes a venv of exactly those pins under parity's
cache, keyed by the spec's hash and the Python version
(``<cache>/converters/<name>-py3.11-<hash>``), so a changed spec or interpreter makes a
new environment and never reuses a stale one. pip installs from its configured index and
``--find-links`` (offline with ``--no-index``); nothing is downloaded at ``parity run``
time. An exporter that declares ``converter="<name>"`` runs there as a subprocess
(:mod:`parity.converters.environment`); while the environment is absent its variants are
``n/a`` with the install command.

This module reads specs and finds environments (stat calls, no subprocess): the
applicability check in the parent uses it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.resources
import json
import sys
import tomllib
from pathlib import Path

from parity.errors import ParityError
from parity.paths import cache_dir

#: The file that marks an environment as complete (written last, atomically).
MARKER = "parity-converter.json"


@dataclasses.dataclass(frozen=True)
class ConverterSpec:
    """One converter environment, as shipped in ``parity/converters/<name>.toml``.

    Attributes:
        name: the converter's name (``parity converters install NAME``).
        description: one line for ``parity converters list``.
        python: the ``major.minor`` Python versions the pins were tested on.
        check: Python code run in the new environment to prove it works.
        requirements: pip requirement lines, each pinned with ``==``.
        timeout: seconds one conversion may take before it is killed (a failed variant).
    """

    name: str
    description: str
    python: tuple[str, ...]
    check: str
    requirements: tuple[str, ...]
    timeout: float

    def __post_init__(self) -> None:
        loose = [r for r in self.requirements if "==" not in r]
        if loose:
            raise ParityError(f"converter spec {self.name!r}: not pinned with '==': {loose}")

    def key(self, python: str | None = None) -> str:
        """The environment's key: the spec's hash and the Python version, e.g.
        ``py3.11-1a2b3c4d5e6f7a8b``."""
        python = python or running_python()
        blob = json.dumps(
            {"name": self.name, "requirements": sorted(self.requirements), "python": python},
            sort_keys=True,
        ).encode()
        return f"py{python}-{hashlib.sha256(blob).hexdigest()[:16]}"

    def path(self, python: str | None = None) -> Path:
        """Where this spec's environment lives (made or not)."""
        return cache_dir() / "converters" / f"{self.name}-{self.key(python)}"

    def installed(self) -> Path | None:
        """The complete environment for the running Python, or ``None``."""
        path = self.path()
        return path if (path / MARKER).is_file() else None

    @property
    def install_command(self) -> str:
        return f"parity converters install {self.name}"

    def absent_reason(self) -> str | None:
        """Why the converter cannot run here (an ``n/a`` reason), or ``None`` when it can."""
        if self.installed() is not None:
            return None
        return (
            f"the {self.name} converter environment is not made here ({self.description}; "
            f"its pins clash with parity's); make it once with `{self.install_command}`"
        )


def running_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _folder() -> Path:
    return Path(str(importlib.resources.files("parity.converters")))


def parse_spec(path: Path) -> ConverterSpec:
    """Read one spec file; a malformed one is a ParityError naming it."""
    try:
        data = tomllib.loads(path.read_text())
        return ConverterSpec(
            name=str(data["name"]),
            description=str(data["description"]),
            python=tuple(str(v) for v in data["python"]),
            check=str(data["check"]),
            requirements=tuple(str(r) for r in data["requirements"]),
            timeout=float(data["timeout"]),
        )
    except (OSError, tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ParityError(f"{path}: not a converter spec ({type(exc).__name__}: {exc})") from exc


@functools.cache
def specs() -> dict[str, ConverterSpec]:
    """Every converter spec shipped with parity, by name."""
    found = {}
    for path in sorted(_folder().glob("*.toml")):
        spec = parse_spec(path)
        if spec.name != path.stem:
            raise ParityError(f"{path}: names converter {spec.name!r}, not {path.stem!r}")
        found[spec.name] = spec
    return found


def spec(name: str) -> ConverterSpec:
    if name not in specs():
        known = ", ".join(specs()) or "none"
        raise ParityError(f"unknown converter {name!r}; known: {known}")
    return specs()[name]
