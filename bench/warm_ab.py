"""Interleaved A/B timing of whole processes in one window, for a loaded shared machine.

    python bench/warm_ab.py --rounds 5 --out results.json \\
        --case 'before=env PYTHONPATH=/tmp/old python -m parity.cli run -q -m mobilenet_v2' \\
        --case 'after=env PYTHONPATH=. python -m parity.cli run -q -m mobilenet_v2'

Each round runs every case once, in turn (the order rotates each round), each a fresh
process timed from outside (wall clock; CPU and peak RSS of the process tree by
``getrusage`` of the children). Absolute seconds on a shared machine move with its load;
ratios between cases of the same rounds do not move as much, so the table gives the
median of each case and the median of the per-round ratios to the first case. A case
whose exit status differs between rounds, or is not 0 or 1, stops the bench.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any


def timed(command: str) -> dict[str, Any]:
    """Run ``command`` (a shell line) once: exit status, wall and CPU seconds, peak RSS."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, shell=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "exit": done.returncode,
        "wall": round(wall, 3),
        "cpu": round(cpu, 3),
        "maxrss_mib": round(after.ru_maxrss / 1024, 1),
        "tail": (done.stdout + done.stderr)[-400:],
    }


def rounds(cases: dict[str, str], count: int) -> dict[str, list[dict[str, Any]]]:
    """``count`` rounds of every case, the order rotated each round."""
    names = list(cases)
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    for index in range(count):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            run = timed(cases[name])
            if run["exit"] not in (0, 1) or {r["exit"] for r in runs[name]} - {run["exit"]}:
                raise SystemExit(f"{name}: exit {run['exit']} in round {index + 1}:\n{run['tail']}")
            runs[name].append(run)
            print(f"round {index + 1} {name}: {run['wall']} s (exit {run['exit']})", flush=True)
    return runs


def summary(runs: dict[str, list[dict[str, Any]]]) -> list[str]:
    """A markdown table: median wall and CPU per case, the median per-round ratio."""
    first = next(iter(runs))
    lines = [
        f"| case | median wall s (min-max) | median CPU s | per-round ratio to {first} | exit |",
        "|---|---|---|---|---|",
    ]
    for name, each in runs.items():
        walls = [r["wall"] for r in each]
        ratios = [r["wall"] / f["wall"] for r, f in zip(each, runs[first], strict=True)]
        lines.append(
            f"| {name} | {statistics.median(walls):.2f} ({min(walls):.2f}-{max(walls):.2f}) "
            f"| {statistics.median(r['cpu'] for r in each):.2f} "
            f"| {statistics.median(ratios):.2f}x | {each[0]['exit']} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", action="append", required=True, help="NAME=shell command")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, help="JSON of every run")
    args = parser.parse_args()
    cases = dict(c.split("=", 1) for c in args.case)
    load = os.getloadavg()
    runs = rounds(cases, args.rounds)
    lines = summary(runs)
    print(f"load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    print("\n".join(lines))
    if args.out:
        args.out.write_text(json.dumps({"cases": cases, "runs": runs, "table": lines}, indent=1))


if __name__ == "__main__":
    main()
