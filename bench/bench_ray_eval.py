"""Benchmark of ``parity eval --engine ray`` against the local engine on this machine:
images/s end to end and per variant, and the peak memory of every process (each Ray
actor by the variant it runs).

    python bench/bench_ray_eval.py [--images 256] [--batch-size 32]
        [--runtime ort_dynamo --runtime litert_fp32] [--out bench/ray_eval.md]

The dataset is the 16 fixture images copied ``--images / 16`` times into 4 class folders
(mobilenet_v2, 224x224: real decoding and resizing). Runs local, Ray, local (the first
local run makes the exports and warms the caches; the table reports the second) in this
process, sampling ``/proc`` every 0.2 s for every descendant's peak RSS (VmHWM). The Ray
run is a local cluster sized to this machine (all CPUs, a 1 GiB object store). A
``## Notes`` section already in ``--out`` is kept.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def make_folder(root: Path, images: int) -> None:
    fixtures = sorted((ROOT / "fixtures" / "images").iterdir())
    for i in range(images):
        source = fixtures[i % len(fixtures)]
        folder = root / str(i % 4)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, folder / f"{i:05d}-{source.name}")


class Sampler:
    """Peak RSS (VmHWM) of every descendant of this process, by pid, with its command line."""

    def __init__(self) -> None:
        self.peaks: dict[int, tuple[int, str]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _loop(self) -> None:
        me = os.getpid()
        while not self.stop.wait(0.2):
            parents: dict[int, int] = {}
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    try:
                        stat = (entry / "stat").read_text()
                        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
                    except (OSError, ValueError, IndexError):
                        continue
            for pid in parents:
                ancestor = pid
                while ancestor in parents and ancestor not in (me, 0, 1):
                    ancestor = parents[ancestor]
                if ancestor != me and pid != me:
                    continue
                try:
                    status = Path(f"/proc/{pid}/status").read_text()
                    command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
                except OSError:
                    continue
                found = re.search(r"VmHWM:\s+(\d+) kB", status)
                if found:
                    peak = int(found.group(1)) * 1024
                    old = self.peaks.get(pid, (0, ""))[0]
                    self.peaks[pid] = (max(peak, old), command.decode(errors="replace").strip())


def label(pid: int, command: str, actors: dict[int, str]) -> str:
    if pid == os.getpid():
        return "driver (this process)"
    if pid in actors:
        return f"actor: {actors[pid]}"
    if "parity.worker" in command:
        return f"worker: {Path(command.split()[-1]).stem}"
    if command.startswith("ray::"):
        return command.split()[0]
    return Path(command.split()[0]).name if command else "?"


def run(engine: str, root: Path, runtimes: list[str], batch: int) -> dict[str, Any]:
    from parity.evaluate import EvalConfig, evaluate
    from parity.evaluate.ray_engine import evaluate_ray

    config = EvalConfig(root, "mobilenet_v2", runtimes, batch_size=batch)
    actors: dict[int, str] = {}

    def progress(message: str) -> None:
        found = re.fullmatch(r"(\S+): actor pid (\d+) on \S+", message)
        if found:
            actors[int(found.group(2))] = found.group(1)

    with Sampler() as sampler:
        start = time.perf_counter()
        result = evaluate_ray(config, progress=progress) if engine == "ray" else evaluate(config)
        wall = time.perf_counter() - start
    assert not result.failed, [s.error for s in result.scores]
    memory: dict[str, int] = {}
    for pid, (peak, command) in sampler.peaks.items():
        name = label(pid, command, actors)
        memory[name] = max(memory.get(name, 0), peak)
    return {"engine": engine, "wall": wall, "result": result, "memory": memory}


def table(runs: list[dict[str, Any]], images: int) -> list[str]:
    lines = [
        "| engine | wall s | images/s end to end | "
        + " | ".join(f"{s.name} images/s" for s in runs[0]["result"].scores)
        + " |",
        "|---|---:|---:|" + "---:|" * len(runs[0]["result"].scores),
    ]
    for each in runs:
        speeds = " | ".join(f"{s.images_per_s:.1f}" for s in each["result"].scores)
        lines.append(
            f"| {each['engine']} | {each['wall']:.1f} | {images / each['wall']:.2f} | {speeds} |"
        )
    lines += ["", "| engine | process | peak RSS MiB |", "|---|---|---:|"]
    for each in runs:
        for name, peak in sorted(each["memory"].items(), key=lambda kv: -kv[1]):
            if peak >= 50 << 20:
                lines.append(f"| {each['engine']} | {name} | {peak / (1 << 20):.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--runtime", action="append", dest="runtimes")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "ray_eval.md")
    args = parser.parse_args()
    runtimes = args.runtimes or ["ort_dynamo", "litert_fp32"]
    with tempfile.TemporaryDirectory(prefix="parity-bench-ray-") as tmp:
        root = Path(tmp)
        make_folder(root, args.images)
        first = run("local", root, runtimes, args.batch_size)
        runs = [
            run("ray", root, runtimes, args.batch_size),
            run("local", root, runtimes, args.batch_size),
        ]
        same = runs[0]["result"].comparable() == runs[1]["result"].comparable()
    load = os.getloadavg()
    head = [
        "# `parity eval --engine ray` vs the local engine",
        "",
        f"`python bench/bench_ray_eval.py --images {args.images} --batch-size {args.batch_size} "
        + " ".join(f"--runtime {r}" for r in runtimes)
        + f"`: mobilenet_v2 (224x224) on {args.images} images, {os.cpu_count()} CPUs "
        f"({platform.processor() or platform.machine()}), load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} at the end; the first local run "
        f"(exports, caches) took {first['wall']:.1f} s and is not in the table. "
        f"Ray's result equals the local one (`comparable()`): {same}.",
        "",
    ]
    notes = ""
    if args.out.is_file() and "## Notes" in args.out.read_text():
        notes = "\n## Notes" + args.out.read_text().split("## Notes", 1)[1]
    args.out.write_text("\n".join(head + table(runs, args.images)) + "\n" + notes)
    print(args.out.read_text())


if __name__ == "__main__":
    main()
