"""The run directory's shared names and array files: what the parent (:mod:`parity.workers`,
:mod:`parity.prefetch`) and a worker (:mod:`parity.worker`) both read and write.

Kept apart from the worker's entry point so that the parent never imports the module
that imports every framework-side module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: Environment variable of the test-only fault injector (``task:phase``).
FAULT_ENV = "PARITY_WORKER_FAULT"
#: The reference task's name (its taps go to ``reference/``).
REFERENCE_TASK = "reference"


def save_arrays(folder: Path, arrays: dict[str, np.ndarray]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in arrays.items():
        np.save(folder / f"{name}.npy", np.ascontiguousarray(value))


def load_arrays(folder: Path, mmap: bool = True) -> dict[str, np.ndarray]:
    """Taps written by a worker (memory-mapped: the pages are the file's, not the heap's)."""
    return {p.stem: np.load(p, mmap_mode="r" if mmap else None) for p in folder.glob("*.npy")}
