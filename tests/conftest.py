"""Shared fixtures for parity's own tests.

Every test runs real runtimes on the real fixture images. The artifact and weights
cache is a per-session temporary folder (so the suite proves a cold start works),
unless PARITY_TEST_CACHE names a folder to reuse between local runs.
"""

from __future__ import annotations

import ctypes
import gc
import importlib.abc
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType

import pytest

from parity import forkserver, lazy
from parity.harness import RunConfig, Session
from parity.local import LocalSession
from parity.result import VariantResult
from parity.variants import VARIANTS


class TorchBeforeTensorFlow(importlib.abc.MetaPathFinder):
    """Import order trap (../shared/STACK.md): torch and torchvision must be loaded before
    TensorFlow in one process, or triton segfaults when torchvision loads it later. This
    finder loads them just before the first ``import tensorflow`` / ``keras`` of the
    session (a test module's own, at its top), instead of in every session at conftest
    import: a session of tests that never import TensorFlow here no longer pays torch's
    ~0.65 GiB and its import time."""

    def find_spec(
        self, name: str, path: Sequence[str] | None = None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if name in ("tensorflow", "keras") and not _probing():
            sys.meta_path.remove(self)  # once: torch is then loaded for good
            if lazy.installed("torch"):
                lazy.torch()
        return None


def _probing() -> bool:
    """Whether the finder was asked by ``importlib.util.find_spec`` (``lazy.installed``, a
    skip condition at collection): a probe imports nothing, so torch need not come first.
    Any other caller counts as an import (the safe side if the frames ever differ)."""
    caller = sys._getframe(3)  # <- importlib._bootstrap._find_spec <- find_spec <- here
    return caller.f_code.co_name == "find_spec" and "util" in caller.f_code.co_filename


if "tensorflow" not in sys.modules and "keras" not in sys.modules:
    sys.meta_path.insert(0, TorchBeforeTensorFlow())


def pytest_configure(config: pytest.Config) -> None:
    """One set of shared fork servers for the whole session (the xdist workers and every
    CLI and inner pytest process its tests start inherit the folder): torch and TensorFlow
    are imported once per distinct worker environment, not once per test process
    (parity/forkserver.py); a ``PARITY_FORKSERVER`` already set is kept."""
    if forkserver.SHARED_DIR not in os.environ:  # the controller (or a plain pytest run)
        os.environ[forkserver.SHARED_DIR] = tempfile.mkdtemp(prefix="parity-forkservers-")
        os.environ.setdefault(forkserver.SWITCH, "shared")
        config.stash[_SERVERS_OWNED] = Path(os.environ[forkserver.SHARED_DIR])


def pytest_unconfigure(config: pytest.Config) -> None:
    folder = config.stash.get(_SERVERS_OWNED, None)
    if folder is not None:
        forkserver.stop_shared(folder)
        shutil.rmtree(folder, ignore_errors=True)


_SERVERS_OWNED = pytest.StashKey[Path]()


def pytest_report_header(config: pytest.Config) -> str | None:
    """Say what the default marker expression leaves out: under pytest-xdist (`make test`)
    the summary line has no deselected count."""
    if "not heavy" in (config.option.markexpr or ""):
        return "heavy cases deselected (-m 'not heavy'): `make heavy` runs them"
    return None


@pytest.fixture(scope="session", autouse=True)
def parity_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point PARITY_CACHE_DIR at a cache for the whole test session, one for all the
    xdist workers of a ``-n`` run (the cache's locks make each export happen once)."""
    if os.environ.get("PARITY_TEST_CACHE"):
        root = Path(os.environ["PARITY_TEST_CACHE"])
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        root = tmp_path_factory.getbasetemp().parent / "parity-cache"
        root.mkdir(exist_ok=True)
    else:
        root = tmp_path_factory.mktemp("parity-cache")
    previous = os.environ.get("PARITY_CACHE_DIR")
    os.environ["PARITY_CACHE_DIR"] = str(root)
    yield root
    if previous is None:
        os.environ.pop("PARITY_CACHE_DIR", None)
    else:
        os.environ["PARITY_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def session_for(parity_cache: Path) -> Callable[[str], Session]:
    """One shared :class:`Session` per model: its weights, reference, exports and variants
    run in worker processes (as the CLI's), so this process imports no framework for them."""
    sessions: dict[str, Session] = {}

    def get(model: str) -> Session:
        if model not in sessions:
            sessions[model] = Session(RunConfig(model=model))
        return sessions[model]

    return get


@pytest.fixture(scope="module")
def local_session_for(parity_cache: Path) -> Callable[[str], LocalSession]:
    """One in-process :class:`LocalSession` per model and test module, for tests of code
    that runs a framework here on purpose (the doctor's checks on a torch module, a twin's
    build). Module-scoped: its torch module, taps and runners are released when the module
    ends (:func:`release_framework_memory`), instead of staying in the pytest process for
    the rest of the session (the weights and the reference come from the cache, so a
    second module pays ~1 s for them)."""
    sessions: dict[str, LocalSession] = {}

    def get(model: str) -> LocalSession:
        if model not in sessions:
            sessions[model] = LocalSession(RunConfig(model=model))
        return sessions[model]

    return get


@pytest.fixture(scope="session")
def fp32_parity(session_for: Callable[[str], Session]) -> Callable[[str, str], VariantResult]:
    """``fp32_parity(model, variant)``: live check asserted to pass every tap, exactly in top-k."""

    def check(model: str, variant: str) -> VariantResult:
        session = session_for(model)
        result = session.check(VARIANTS[variant])
        assert result.error is None
        assert result.verdict is not None
        assert [t.tap.name for t in result.verdict.taps] == [t.name for t in session.card.taps]
        assert result.passed, result.verdict.explain([f.name for f in session.fixtures])
        logits = result.verdict.taps[-1].metrics
        assert logits.top1_agreement == 1.0 and logits.top5_overlap == 1.0
        # The reference is not degenerate: every tap has a real scale (calibrated weights).
        assert all(t.metrics.scale > 0.1 for t in result.verdict.taps)
        return result

    return check


#: Resident MiB of this process after the last release (:func:`release_framework_memory`).
_released_rss = [0]
#: Growth that triggers a release: a release costs 1-3 s with torch and TF loaded (two
#: full garbage collections over their objects, a heap walk), paid by ~45 modules when
#: unconditional; most modules add nothing, and what they leave is bounded by this.
RELEASE_ABOVE_MIB = 200


def _rss_mib() -> int:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) // 1024


@pytest.fixture(scope="module", autouse=True)
def release_framework_memory() -> Iterator[None]:
    """After a module that grew the process, drop the Keras graphs its in-process twins
    and conversions left in Keras' global state and hand freed heap back to the OS: the
    pytest process's peak grew module by module (1.6 GiB after the first modules, 8 GiB
    near the end; bench/suite.md)."""
    yield
    linux = sys.platform == "linux"
    if linux and _rss_mib() - _released_rss[0] < RELEASE_ABOVE_MIB:
        return
    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session(free_memory=True)
    gc.collect()
    if linux:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        _released_rss[0] = _rss_mib()
