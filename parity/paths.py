"""Where parity finds its project, model cards, fixtures, tolerances, goldens and cache.

Bundled defaults ship inside the package (``parity/_bundled/{models,fixtures}`` in a
wheel, read with :mod:`importlib.resources`; the repository's top-level ``models/`` and
``fixtures/`` in a source checkout or editable install).

A user project is the nearest directory, from the working directory up, holding a
``parity.toml`` or a ``pyproject.toml`` with a ``[tool.parity]`` table. ``PARITY_HOME``
names the project directory instead of searching (a clone of this repository works too:
its ``models/`` and ``fixtures/`` are used). The project's paths override the bundled
ones; anything it does not set comes from the bundle. The artifact cache lives in
``PARITY_CACHE_DIR`` or ``~/.cache/parity``.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import os
from pathlib import Path
from typing import Any

from parity.errors import ParityError
from parity.schema import read_config

#: The config file a project may use instead of ``[tool.parity]`` in pyproject.toml.
PARITY_TOML = "parity.toml"
#: Where ``parity init`` puts a project's cards (``cards`` in the config overrides it).
DEFAULT_CARDS = "parity/models"


def bundled_dir(name: str) -> Path:
    """A bundled asset folder, ``models`` or ``fixtures``."""
    packaged = importlib.resources.files("parity") / "_bundled" / name
    if packaged.is_dir():
        return Path(str(packaged))
    source = Path(__file__).resolve().parent.parent / name  # source checkout / editable
    if source.is_dir():
        return source
    raise ParityError(f"{packaged}: bundled {name} missing from the parity installation")


def in_installed_package(path: Path) -> bool:
    """Whether ``path`` lies inside the installed parity package (read-only to parity: its
    bundled goldens, cards and tolerances are never written; a source checkout's own
    ``fixtures/`` and ``models/`` lie beside the package, not in it)."""
    return Path(path).resolve().is_relative_to(Path(__file__).resolve().parent)


def parity_table(path: Path) -> dict[str, Any] | None:
    """The parity settings in a config file (``None``: a pyproject without ``[tool.parity]``)."""
    data = read_config(path, "config file")
    table = data.get("tool", {}).get("parity")
    if table is None and path.name != "pyproject.toml":
        table = data.get("parity", data)  # a dedicated file may hold the keys at top level
    return None if table is None else dict(table)


def _config_in(folder: Path) -> Path | None:
    if (folder / PARITY_TOML).is_file():
        return folder / PARITY_TOML
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file() and parity_table(pyproject) is not None:
        return pyproject
    return None


@dataclasses.dataclass(frozen=True)
class Project:
    """The project a command runs in, and where each of its assets comes from.

    Attributes:
        root: the project directory (``None``: none found, bundled defaults only).
        config: the file holding its parity settings (``None``: no config file).
        cards: card folders, the project's first (its cards win over bundled names).
        fixtures: fixture images (manifest or plain folder).
        tolerances: tolerance TOML.
        goldens: where this project's goldens are read and written (default
            ``parity/goldens`` in a configured project).
        bundled_goldens: the bundled models' goldens, read when the project has none.
    """

    root: Path | None
    config: Path | None
    cards: tuple[Path, ...]
    fixtures: Path
    tolerances: Path
    goldens: Path
    bundled_goldens: Path

    def goldens_root(self, model: str) -> Path:
        """Where ``model``'s goldens are: the project's, else the bundled ones if it has them."""
        if (self.goldens / model).is_dir() or not (self.bundled_goldens / model).is_dir():
            return self.goldens
        return self.bundled_goldens

    @property
    def config_label(self) -> str:
        """What reports print as the config used."""
        return str(self.config) if self.config else "no project config (bundled defaults)"


def _project_at(root: Path, config: Path | None, clone: bool = False) -> Project:
    """The project at ``root``; ``clone``: a copy of this repository (its own assets)."""
    table = (parity_table(config) if config else None) or {}
    models, fixtures = bundled_dir("models"), bundled_dir("fixtures")
    if clone:
        models, fixtures = root / "models", root / "fixtures"

    def path(key: str, default: Path) -> Path:
        value = table.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise ParityError(f"{config}: '{key}' must be a path string, got {value!r}")
        return (root / value).resolve()

    own_cards = path("cards", root / DEFAULT_CARDS)
    cards = tuple(dict.fromkeys(p.resolve() for p in (own_cards, models) if p.is_dir()))
    own_goldens = fixtures / "goldens" if clone or config is None else root / "parity/goldens"
    return Project(
        root=root,
        config=config,
        cards=cards or (models,),
        fixtures=path("fixtures", fixtures),
        tolerances=path("tolerances", fixtures / "tolerances.toml"),
        goldens=path("goldens", own_goldens),
        bundled_goldens=fixtures / "goldens",
    )


def find_project(start: Path | None = None) -> Project:
    """``PARITY_HOME``'s project, else the nearest configured one from ``start`` up."""
    if home := os.environ.get("PARITY_HOME"):
        root = Path(home).resolve()
        if not root.is_dir():
            raise ParityError(f"PARITY_HOME={home}: no such directory")
        clone = (root / "models").is_dir() and (root / "fixtures").is_dir()
        return _project_at(root, _config_in(root), clone)
    start = (start or Path.cwd()).resolve()
    for folder in (start, *start.parents):
        if config := _config_in(folder):  # parity's own checkout: its goldens are its own
            checkout = (folder / "fixtures").resolve() == bundled_dir("fixtures").resolve()
            return _project_at(folder, config, clone=checkout)
    fixtures = bundled_dir("fixtures")
    return Project(
        root=None,
        config=None,
        cards=(bundled_dir("models"),),
        fixtures=fixtures,
        tolerances=fixtures / "tolerances.toml",
        goldens=fixtures / "goldens",
        bundled_goldens=fixtures / "goldens",
    )


def project_root() -> Path:
    """The project directory, or the working directory when there is no project."""
    return find_project().root or Path.cwd()


def models_dirs() -> tuple[Path, ...]:
    """Card folders, the project's first."""
    return find_project().cards


def fixtures_dir() -> Path:
    """The project's fixture images (default: the bundled ones)."""
    return find_project().fixtures


def calibration_dir() -> Path:
    """The bundled calibration images (BatchNorm re-estimation, default int8 calibration)."""
    return bundled_dir("fixtures")


def cache_dir() -> Path:
    """Root of the artifact and weights cache (created on demand)."""
    root = Path(os.environ.get("PARITY_CACHE_DIR") or Path.home() / ".cache" / "parity")
    root.mkdir(parents=True, exist_ok=True)
    return root
