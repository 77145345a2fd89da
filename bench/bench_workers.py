"""Benchmark of the worker-process design: memory per process and of the tree, wall time,
and the cost of moving taps between processes.

    python bench/bench_workers.py [--model mobilenet_v2] [--jobs 1 2] [--out bench/workers.md]

Runs ``parity run -r onnxruntime -r keras -r litert --summary`` (the all-variant run of
the single-process baseline) twice per ``--jobs`` value, in a fresh empty cache
(``PARITY_CACHE_DIR``): cold (the torch reference and every export) and then warm (the
same cache), sampling ``/proc`` every 0.2 s: the peak RSS (VmHWM) of every process of
the tree and the peak of the tree's summed RSS. Then times one 63.5 MiB tap set
(mobilenet_v2: 16 images, 21 taps + logits) through a memory-mapped ``.npy`` in a run
directory and through ``multiprocessing.shared_memory``, write + read, in this process.
A ``## Notes`` section already in ``--out`` is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing import shared_memory
from pathlib import Path
from typing import Any

import numpy as np

#: mobilenet_v2's taps on 16 images (float32, NCHW), 63.5 MiB in all.
TAP_SHAPES = [
    (16, 32, 112, 112), (16, 16, 112, 112), (16, 24, 56, 56), (16, 24, 56, 56),
    (16, 32, 28, 28), (16, 32, 28, 28), (16, 32, 28, 28), (16, 64, 14, 14),
    (16, 64, 14, 14), (16, 64, 14, 14), (16, 64, 14, 14), (16, 96, 14, 14),
    (16, 96, 14, 14), (16, 96, 14, 14), (16, 160, 7, 7), (16, 160, 7, 7),
    (16, 160, 7, 7), (16, 320, 7, 7), (16, 1280, 7, 7), (16, 1280), (16, 1000), (16, 1000),
]  # fmt: skip


def _status(pid: int) -> dict[str, str]:
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in lines if ":" in line)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _tree(pid: int) -> list[int]:
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        queue += _children(current)
    return pids


def _kib(value: str) -> int:
    return int(value.split()[0]) if value else 0


def _argv(pid: int) -> list[str]:
    try:
        return [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def command_line(pid: int, limit: int = 160) -> str:
    """The command line of ``pid`` (first ``limit`` characters), or the pid once it is gone."""
    return " ".join(_argv(pid))[:limit] or str(pid)


def _name(pid: int) -> str:
    argv = _argv(pid)
    text = " ".join(argv)
    if "parity.worker" in text:
        return "worker " + Path(argv[-1]).name.split(".")[1]
    return "parent (parity run)" if "parity" in text else text[:40] or str(pid)


def monitor(
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
    interval: float = 0.1,
    name: Callable[[int], str] = _name,
) -> dict[str, Any]:
    """Run ``command`` to its end, sampling ``/proc`` every ``interval`` s (~10 Hz).

    Returns wall and CPU seconds (user+sys of the whole tree, from the children's
    rusage), exit code, output (stdout+stderr; also written to ``log``), the peak RSS
    (VmHWM) of every process seen as ``[(name, KiB), ...]`` largest first, and the peak
    of the tree's summed RSS in KiB.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with tempfile.TemporaryFile() as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        peaks: dict[int, tuple[str, int]] = {}
        tree_peak = 0
        while process.poll() is None:
            total = 0
            for pid in _tree(process.pid):
                status = _status(pid)
                if not status:
                    continue
                total += _kib(status.get("VmRSS", ""))
                hwm = _kib(status.get("VmHWM", ""))
                if hwm > peaks.get(pid, ("", 0))[1]:
                    peaks[pid] = (name(pid), hwm)
            tree_peak = max(tree_peak, total)
            time.sleep(interval)
        wall = time.perf_counter() - start
        sink.seek(0)
        output = sink.read().decode(errors="replace")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if log is not None:
        log.write_text(output)
    return {"wall": wall, "cpu": cpu, "rc": process.returncode, "output": output,
            "peaks": sorted(peaks.values(), key=lambda p: -p[1]), "tree": tree_peak}  # fmt: skip


def measure_run(model: str, jobs: int, cache: Path) -> dict[str, Any]:
    """Wall time, per-process peak RSS and the tree's peak summed RSS of one run in ``cache``."""
    command = [sys.executable, "-m", "parity.cli", "run", "-q", "--summary", "-m", model,
               "-r", "onnxruntime", "-r", "keras", "-r", "litert", "--jobs", str(jobs)]  # fmt: skip
    run = monitor(command, env=dict(os.environ, PARITY_CACHE_DIR=str(cache)), interval=0.2)
    run["peaks"] = [(n, kib) for n, kib in run["peaks"] if kib >= 2**14]  # not `uname -p`
    output = run["output"].strip()
    run["verdict"] = output.splitlines()[-1] if output else ""
    return run


def tap_transfer(repeats: int = 5) -> dict[str, float]:
    """Seconds to move one tap set: .npy (write, mmap read, touch) vs shared memory."""
    rng = np.random.default_rng(0)
    taps = {f"t{i}": rng.standard_normal(s, dtype=np.float32) for i, s in enumerate(TAP_SHAPES)}
    size = sum(a.nbytes for a in taps.values())
    npy, shm = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as folder:
            start = time.perf_counter()
            for name, array in taps.items():
                np.save(Path(folder) / f"{name}.npy", array)
            loaded = {n: np.load(Path(folder) / f"{n}.npy", mmap_mode="r") for n in taps}
            _ = sum(float(a.sum()) for a in loaded.values())
            npy.append(time.perf_counter() - start)
        start = time.perf_counter()
        block = shared_memory.SharedMemory(create=True, size=size)
        offset, views = 0, {}
        for name, array in taps.items():
            view = np.ndarray(array.shape, np.float32, block.buf, offset)
            view[...] = array
            views[name] = view
            offset += array.nbytes
        _ = sum(float(v.sum()) for v in views.values())
        shm.append(time.perf_counter() - start)
        del views, view
        block.close()
        block.unlink()
    return {"mib": size / 2**20, "npy": float(np.median(npy)), "shm": float(np.median(shm))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "workers.md")
    args = parser.parse_args()
    load = os.getloadavg()
    lines = [
        f"# Worker processes: {args.model}, all variants (`-r onnxruntime -r keras -r litert`)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M')} by `python bench/bench_workers.py`, "
        f"{os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
        "at the start (the machine is shared: compare figures within this table). Cold: an "
        "empty cache (torch reference and every export); warm: the same cache again.",
        "",
        "| --jobs | cache | wall s | exit | tree peak RSS GiB | process peaks (VmHWM) GiB |",
        "|---|---|---|---|---|---|",
    ]
    for jobs in args.jobs:
        with tempfile.TemporaryDirectory(prefix="parity-bench-cache-") as cache:
            for state in ("cold", "warm"):
                run = measure_run(args.model, jobs, Path(cache))
                peaks = ", ".join(f"{n} {kib / 2**20:.2f}" for n, kib in run["peaks"])
                lines.append(
                    f"| {jobs} | {state} | {run['wall']:.1f} | {run['rc']} "
                    f"| {run['tree'] / 2**20:.2f} | {peaks} |"
                )
                print(lines[-1], run["verdict"], flush=True)
    transfer = tap_transfer()
    lines += [
        "",
        f"Moving one tap set ({transfer['mib']:.1f} MiB): memory-mapped `.npy` in the run "
        f"directory (write + map + read every value) {transfer['npy']:.3f} s; "
        f"`multiprocessing.shared_memory` (copy in + read) {transfer['shm']:.3f} s "
        "(median of 5).",
    ]
    notes = args.out.read_text().partition("\n## Notes")[2] if args.out.is_file() else ""
    text = "\n".join(lines) + "\n" + (f"\n## Notes{notes}" if notes else "")
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
