"""Where parity finds its models, fixtures and cache.

The project root is the nearest directory (from the working directory up, then from
the installed package up) that holds both ``models/`` and ``fixtures/``; ``PARITY_HOME``
overrides it. The artifact cache lives in ``PARITY_CACHE_DIR`` or ``~/.cache/parity``.
"""

from __future__ import annotations

import os
from pathlib import Path

from parity.errors import ParityError


def project_root() -> Path:
    """The directory holding ``models/`` and ``fixtures/``."""
    if home := os.environ.get("PARITY_HOME"):
        return Path(home)
    for start in (Path.cwd(), Path(__file__).resolve().parent):
        for candidate in (start, *start.parents):
            if (candidate / "models").is_dir() and (candidate / "fixtures").is_dir():
                return candidate
    raise ParityError(
        "cannot find a parity project (a directory with models/ and fixtures/); "
        "run from the repository or set PARITY_HOME"
    )


def models_dir() -> Path:
    return project_root() / "models"


def fixtures_dir() -> Path:
    return project_root() / "fixtures"


def cache_dir() -> Path:
    """Root of the artifact and weights cache (created on demand)."""
    root = Path(os.environ.get("PARITY_CACHE_DIR") or Path.home() / ".cache" / "parity")
    root.mkdir(parents=True, exist_ok=True)
    return root
