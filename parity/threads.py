"""Thread budgets: how many threads each step may use, so workers x threads <= cores.

Frameworks default to one thread per core each; two of them (or two worker processes)
on a 2-core machine then oversubscribe it, and under load that is far slower than one
thread each (measured in bench/RESULTS.md: BatchNorm re-estimation and the torch
reference ran several times faster at 1 thread than at 2 while other work shared the
machine). The counts here are chosen from those measurements, not left to defaults.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from parity.errors import ParityError

#: Threads for the float64 BatchNorm re-estimation (bench: 1 beat 2 under load).
BN_THREADS = 1
#: Threads for the torch reference on the fixture batch (bench/RESULTS.md, speed region:
#: 3.4 s at 1 thread vs 6.3 s at 2 on 2 loaded cores, interleaved best of 3).
REFERENCE_THREADS = 1


def available_cores() -> int:
    """The cores parity may use: ``PARITY_CORES`` if set, else the process's CPU affinity.

    The one source of the core count: the default ``--jobs`` and each worker's runtime
    threads (:mod:`parity.workers`) are derived from it.
    """
    if value := os.environ.get("PARITY_CORES"):
        if not value.strip().isdigit() or int(value) < 1:
            raise ParityError(f"PARITY_CORES={value!r}: expected a whole number of cores >= 1")
        return int(value)
    return max(1, len(os.sched_getaffinity(0)))


@contextlib.contextmanager
def threads(torch: Any, count: int) -> Iterator[None]:
    """Run a torch step with ``count`` intra-op threads, restoring the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
