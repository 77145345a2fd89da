"""Lazy, ordered imports of the heavy frameworks.

parity's core imports numpy only; each runner imports its framework when activated.
TensorFlow must come after torch and torchvision in one process: TF first and triton
(loaded by torchvision) later segfaults (see ../shared/STACK.md). :func:`tensorflow`
therefore loads torch and torchvision first whenever they are installed.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import sys
from types import ModuleType

from parity.errors import MissingRuntimeError

#: True in a backend's worker process (:mod:`parity.worker`): it imports one framework
#: only, so TensorFlow is imported without torch (no import-order workaround needed).
ISOLATED = False
#: In a worker: TensorFlow's intra-op threads, set as it is imported. An export (the twin, a
#: TFLite calibration) starts TF's thread pools at one thread per core before the Keras
#: runner could set its count, so a cold worker ran the keras variant at another thread
#: count than a warm one and its numbers moved (measured: two cold runs on one cache gave
#: keras max_abs_norm values differing in the low bits; verdicts alike).
TF_THREADS: int | None = None
_TF_THREADS_SET = False


def installed(module: str) -> bool:
    """Whether ``module`` can be imported here, without importing it."""
    return importlib.util.find_spec(module) is not None


@functools.cache
def package_version(name: str) -> str:
    """The installed version of distribution ``name`` (``not-installed``), without importing it.

    Read once per process: each read scans every folder of ``sys.path`` (~4 ms; a warm run
    keys its artifacts and weights with ~90 reads).
    """
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not-installed"


def require(module: str) -> ModuleType:
    """Import ``module`` or raise a one-line error saying to install it (the ``n/a`` reasons
    of :mod:`parity.applicability` name the exact extra before a runner gets here)."""
    if not installed(module):
        raise MissingRuntimeError(
            f"{module} is not installed in this environment; install the extra of the runtime "
            "that needs it (README: Runtime variants), or pip install 'parity[all]'"
        )
    return importlib.import_module(module)


def torch() -> ModuleType:
    """torch, with torchvision loaded alongside (so TF can follow safely)."""
    module = require("torch")
    if installed("torchvision"):
        importlib.import_module("torchvision")
    return module


def tensorflow() -> ModuleType:
    """tensorflow, after torch/torchvision if those are installed (import-order trap).

    In a worker process (:data:`ISOLATED`) torch is never imported alongside.
    """
    if installed("torch") and not ISOLATED:
        torch()
    if ISOLATED:  # Keras imports scikit-learn for its estimator wrappers when installed:
        sys.modules.setdefault("sklearn", None)  # type: ignore[arg-type]  # 2-2.6 s a TF worker
    module = require("tensorflow")
    global _TF_THREADS_SET
    if TF_THREADS and not _TF_THREADS_SET:  # once, before TF's context starts: a worker
        _TF_THREADS_SET = True  # forked by parity.forkserver finds TF imported, not started
        try:
            module.config.threading.set_intra_op_parallelism_threads(TF_THREADS)
            module.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # started already (the doctor's user code ran TF ops first)
            pass
    return module
