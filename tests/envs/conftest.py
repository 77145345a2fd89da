"""The ``bundle`` fixture of the environment tests (helpers: envsupport.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from envsupport import (
    BUILD_MODULES,
    MAIN_SUITE_VARIANTS,
    MODEL,
    build_bundle,
    can_build,
    tox_runtime,
)


@pytest.fixture(scope="session")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle to check: tox's (``PARITY_BUNDLE``) in a runtime env, else built here."""
    runtime = tox_runtime()
    if runtime is not None:
        path = os.environ.get("PARITY_BUNDLE")
        assert path, "tox runtime envs set PARITY_BUNDLE (see tox.ini)"
        if not (Path(path) / "manifest.json").is_file():
            pytest.fail(f"{path}: no bundle here; build it with `tox -e build`", pytrace=False)
        return Path(path)
    if not can_build():
        pytest.skip(
            "no bundle: outside a tox runtime env, and this env cannot build one "
            f"(needs {', '.join(BUILD_MODULES)})"
        )
    return build_bundle(tmp_path_factory.mktemp("bundle"), MODEL, MAIN_SUITE_VARIANTS)
