"""bench/gpu_check.py, as far as a machine without a GPU allows: it refuses, clearly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from parity.paths import project_root
from parity.variants import VARIANTS

pytestmark = [pytest.mark.torch, pytest.mark.torch_cuda]


def test_without_a_gpu_it_checks_nothing_and_says_why(tmp_path: Path):
    reason = VARIANTS["torch_cuda_fp32"].unavailable()
    if reason is None:
        pytest.skip("a GPU is present: run bench/gpu_check.py itself")
    script = project_root() / "bench" / "gpu_check.py"
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == f"bench/gpu_check.py: nothing checked: {reason}"
    assert not (tmp_path / "out").exists()
