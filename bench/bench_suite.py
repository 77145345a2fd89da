"""The default test suite's cost (issue 14 item 7: <= 6 min wall, <= 4 GiB peak RSS).

    python bench/bench_suite.py                       # run it (~6-25 min on 2 cores)
    python bench/bench_suite.py --from-log LOG --rss RSS.json [--time TIME.txt]

Runs ``python -m pytest -n 2 --dist loadfile -q -p no:randomly --durations=15`` (two
pytest-xdist workers, as ``make test``) in the repository with a cold user cache
(``PARITY_TEST_CACHE`` and ``PARITY_CACHE_DIR`` unset, so tests/conftest.py makes a
temporary one), watched by :func:`bench_workers.monitor` (``/proc`` at ~10 Hz):
wall and CPU seconds, the peak of the whole tree's summed RSS and the largest single
process with its command line; from pytest's output the pass/fail counts and the 15
slowest tests. ``--from-log`` instead parses a log of such a run (``--durations=15``),
the JSON of /work/prof/rssmon.py (``{tree_peak_gib, top: [[gib, cmdline], ...]}``) and
optionally a GNU ``time -v`` file for CPU seconds. Run it without PYTHONPATH pointing at
a worktree (tests/test_project.py builds wheels and venvs and would pick it up).

The run's log is kept in ``$TMPDIR/parity-bench-suite.log``. Writes ``results_suite.json``
and the ``bench_suite`` region of ``RESULTS.md`` (in ``bench/`` unless ``--out``);
``bench/bench_speed.py`` reads the JSON for its targets.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_speed import GIB, gnu_time, load, machine, write_region
from bench_workers import command_line, monitor

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench_suite:start -->", "<!-- bench_suite:end -->"
COMMAND = [
    "-m", "pytest", "-n", "2", "--dist", "loadfile", "-q", "-p", "no:randomly", "--durations=15"
]  # fmt: skip


def parse_log(text: str) -> dict[str, Any]:
    """Counts, pytest's own wall seconds and the slowest tests from pytest's output."""
    summary = [line for line in text.splitlines() if re.search(r" in [\d.]+s\b", line)]
    last = summary[-1].strip("= ") if summary else ""
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) ([a-z]+)", last.split(" in ")[0])}
    seconds = re.search(r" in ([\d.]+)s", last)
    slowest = re.findall(r"^([\d.]+)s (call|setup|teardown)\s+(\S+)", text, re.MULTILINE)
    return {
        "summary": last,
        "counts": counts,
        "pytest_seconds": float(seconds.group(1)) if seconds else None,
        "slowest": [[float(s), phase, test] for s, phase, test in slowest[:15]],
    }


def run_suite(log: Path) -> dict[str, Any]:
    """The default suite, cold user cache, under the monitor."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("PARITY_TEST_CACHE", "PARITY_CACHE_DIR")
    }
    run = monitor([sys.executable, *COMMAND], env=env, cwd=ROOT, log=log, name=command_line)
    return {
        **parse_log(run["output"]),
        "exit": run["rc"],
        "seconds": round(run["wall"], 1),
        "cpu_seconds": round(run["cpu"], 1),
        "tree_rss_gib": round(run["tree"] / GIB, 2),
        "top": [[round(kib / GIB, 2), name] for name, kib in run["peaks"][:5]],
    }


def from_files(log: Path, rss: Path, gnu: Path | None) -> dict[str, Any]:
    """The same figures from a log, rssmon.py's JSON and optionally GNU ``time -v``."""
    parsed = parse_log(log.read_text(errors="replace"))
    memory = json.loads(rss.read_text())
    timed = gnu_time(gnu.read_text(errors="replace")) if gnu else None
    return {
        **parsed,
        "exit": None,
        "seconds": timed["seconds"] if timed else parsed["pytest_seconds"],
        "cpu_seconds": timed["cpu_seconds"] if timed else None,
        "tree_rss_gib": round(memory["tree_peak_gib"], 2),
        "top": [[round(gib, 2), name] for gib, name in memory["top"][:5]],
        "source": f"{log}, {rss}" + (f", {gnu}" if gnu else ""),
    }


def markdown(result: dict[str, Any]) -> str:
    minutes = result["seconds"] / 60 if result["seconds"] else None
    wall = "-" if minutes is None else f"{minutes:.1f} min"
    largest = max((gib for gib, _ in result["top"]), default=0.0)
    lines = [
        START,
        "## Default test suite (`bench/bench_suite.py`, issues 14 and 25)",
        "",
        f"- date: {result['date']}; `python {' '.join(COMMAND)}`, cold user cache; "
        f"{result.get('source', 'run by the script')}",
        f"- machine: {result['machine']}; load average {result['load_before']} before, "
        f"{result['load_after']} after",
        f"- result: {result['summary'] or 'no pytest summary line'} (exit {result['exit']})",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        f"| wall <= 6 min | {wall} (CPU {result['cpu_seconds'] or '-'} s) "
        f"| {'PASS' if minutes is not None and minutes <= 6 else 'MISS'} |",
        f"| largest process <= 4 GiB (issue 25) | {largest} GiB "
        f"| {'PASS' if largest <= 4 else 'MISS'} |",
        f"| peak RSS of the tree <= 4 GiB (issue 14) | {result['tree_rss_gib']} GiB "
        f"| {'PASS' if result['tree_rss_gib'] <= 4 else 'MISS'} |",
        "",
        "Largest processes (peak RSS GiB, command line):",
        "",
        *(f"- {gib} `{' '.join(name.split())}`" for gib, name in result["top"]),
        "",
        "Slowest tests (pytest --durations=15):",
        "",
        "| s | phase | test |",
        "|---|---|---|",
        *(f"| {s} | {phase} | `{test}` |" for s, phase, test in result["slowest"]),
        END,
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from-log", type=Path, help="parse this pytest log instead of running")
    parser.add_argument("--rss", type=Path, help="rssmon.py JSON (with --from-log)")
    parser.add_argument("--time", type=Path, help="GNU time -v output (with --from-log)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench")
    args = parser.parse_args()
    if args.from_log and not args.rss:
        parser.error("--from-log needs --rss")
    args.out.mkdir(parents=True, exist_ok=True)
    before = load()
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.from_log:
        result = from_files(args.from_log, args.rss, args.time)
    else:
        result = run_suite(Path(tempfile.gettempdir()) / "parity-bench-suite.log")
    result.update(date=date, machine=machine(), load_before=before, load_after=load())
    (args.out / "results_suite.json").write_text(json.dumps(result, indent=2) + "\n")
    write_region(args.out / "RESULTS.md", START, END, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
