"""Regenerate bench/RESULTS.md's speed region in one command: ``python bench/run_all.py``.

Runs ``bench/bench_speed.py`` (cold/warm all-variant and ONNX-only runs of mobilenet_v2
and resnet18, compare per variant, torch threads); ``--all`` also reruns the ONNX and
Keras/TFLite benchmarks that own the other regions (about 25 more minutes on 2 cores).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent


def main() -> int:
    scripts = ["bench_speed.py"]
    if "--all" in sys.argv[1:]:
        scripts += ["bench_onnx.py", "bench_tflite.py"]
    for script in scripts:
        code = subprocess.call([sys.executable, str(BENCH / script)])
        if code:
            return code
    return 0


if __name__ == "__main__":
    sys.exit(main())
