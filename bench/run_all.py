"""Regenerate bench/RESULTS.md's speed figures in one command: ``python bench/run_all.py``.

* default: ``bench/bench_speed.py`` — for mobilenet_v2 and resnet18, each in a fresh
  cache: all variants cold, warm ``--jobs 2`` and ``--jobs 1``, warm ONNX-only and the
  Polygraphy-equivalent process; compare per variant and torch threads; the targets
  table of issues 14 and 11. About 10-15 min on 2 quiet cores (the cold runs dominate:
  ~1.5-4 min each); 20+ min under load.
* ``--suite``: then ``bench/bench_suite.py``, the default test suite with a cold user cache
  (wall, CPU, tree and largest-process peak RSS, slowest 15 tests): 6-25 min; the speed
  region is then rerendered so its targets table shows the suite's figures.
* ``--all``: also the ONNX and Keras/TFLite benchmarks that own the other regions and
  ``bench/bench_workers.py`` (workers.md: every process's peak, tap transfer cost) on the
  user's cache: about 25-35 more minutes on 2 cores.

Run it on a machine nothing else is using, without PYTHONPATH pointing at a worktree when
``--suite`` is given (tests/test_project.py builds wheels and venvs).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> int:
    options = set(sys.argv[1:])
    if options - {"--all", "--suite"}:
        print(f"usage: python bench/run_all.py [--all] [--suite]; got {sys.argv[1:]}")
        return 2
    scripts = [["bench_speed.py"]]
    if "--all" in options:
        scripts += [["bench_onnx.py"], ["bench_tflite.py"], ["bench_workers.py"]]
    if "--suite" in options:
        scripts += [["bench_suite.py"], ["bench_speed.py", "--render"]]
    for script, *arguments in scripts:
        code = subprocess.call([sys.executable, str(BENCH / script), *arguments])
        if code:
            print(f"bench/{script} exited with {code}", file=sys.stderr)
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
