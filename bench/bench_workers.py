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
import subprocess
import sys
import tempfile
import time
from multiprocessing import shared_memory
from pathlib import Path

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


def _name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return str(pid)
    text = " ".join(a.decode() for a in argv if a)
    if "parity.worker" in text:
        return "worker " + Path(argv[-2].decode()).name.split(".")[1]
    return "parent (parity run)" if "parity" in text else text[:40]


def measure_run(model: str, jobs: int, cache: Path) -> dict[str, object]:
    """Wall time, per-process peak RSS and the tree's peak summed RSS of one run."""
    command = [sys.executable, "-m", "parity.cli", "run", "-q", "--summary", "-m", model,
               "-r", "onnxruntime", "-r", "keras", "-r", "litert", "--jobs", str(jobs)]  # fmt: skip
    env = dict(os.environ, PARITY_CACHE_DIR=str(cache))
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
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
                peaks[pid] = (_name(pid), hwm)
        tree_peak = max(tree_peak, total)
        time.sleep(0.2)
    wall = time.perf_counter() - start
    output = process.stdout.read().decode() if process.stdout else ""
    verdict = output.strip().splitlines()[-1] if output.strip() else ""
    peaks = {pid: peak for pid, peak in peaks.items() if peak[1] >= 2**14}  # not `uname -p`
    return {"wall": wall, "peaks": sorted(peaks.values(), key=lambda p: -p[1]),
            "tree": tree_peak, "rc": process.returncode, "verdict": verdict}  # fmt: skip


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
                peaks = ", ".join(f"{n} {kib / 2**20:.2f}" for n, kib in run["peaks"])  # type: ignore[attr-defined]
                lines.append(
                    f"| {jobs} | {state} | {run['wall']:.1f} | {run['rc']} "
                    f"| {run['tree'] / 2**20:.2f} | {peaks} |"  # type: ignore[operator]
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
