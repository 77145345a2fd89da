"""Two cold ``parity run`` processes started together on one cache both succeed alike.

The cache's per-artifact file lock (:mod:`parity.artifacts`) lets the first process export
while the other waits and then reads its result: every artifact is exported once (the
cache's ``exports.log``), and both runs give the same verdicts and the same numbers. Real
CLI, real workers, real exports from an empty artifact cache (the calibrated weights are
shared: they are not what is tested).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from parity.artifacts import EXPORT_LOG

pytestmark = [pytest.mark.torch, pytest.mark.onnxruntime, pytest.mark.keras]


def cold_runs_together(
    parity_cache: Path, tmp_path: Path, runtimes: list[str]
) -> tuple[list[dict[str, tuple[str, object]]], Counter[str]]:
    """Start two ``parity run`` on one empty cache at once; each one's verdicts by variant
    (status, every tap's max_abs_norm) and how often each artifact was exported."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "weights").symlink_to(parity_cache / "weights")  # calibrated once, shared
    env = dict(os.environ, PARITY_CACHE_DIR=str(cache))
    reports = [tmp_path / f"run{i}.json" for i in (1, 2)]
    command = [sys.executable, "-m", "parity.cli", "run", "-q", "--summary", "-m", "mobilenet_v2"]
    runs = [
        subprocess.Popen(
            [*command, *(f"-r{r}" for r in runtimes), "--json", str(report)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        for report in reports
    ]
    outputs = [run.communicate(timeout=1800)[0] for run in runs]
    for run, output in zip(runs, outputs, strict=True):
        assert run.returncode == 0, output
    verdicts = []
    for report in reports:
        data = json.loads(report.read_text())
        verdicts.append({
            v["name"]: (v["status"], [t["metrics"]["max_abs_norm"] for t in v.get("taps", [])])
            for v in data["variants"]
        })  # fmt: skip
    log = (cache / "artifacts" / EXPORT_LOG).read_text().splitlines()
    return verdicts, Counter(line.split()[0].split("-")[0] for line in log)


def test_two_cold_runs_on_one_cache_export_once_and_agree(parity_cache: Path, tmp_path: Path):
    verdicts, exports = cold_runs_together(parity_cache, tmp_path, ["ort_torchscript", "keras"])
    assert verdicts[0] == verdicts[1]
    assert {v: s for v, (s, _) in verdicts[0].items()} == {
        "ort_torchscript": "pass",
        "keras": "pass",
    }
    assert exports == {"mobilenet_v2/onnx_torchscript": 1, "mobilenet_v2/keras": 1}


@pytest.mark.heavy
def test_two_cold_runs_with_tf2onnx_and_every_onnx_variant_agree(
    parity_cache: Path, tmp_path: Path
):
    verdicts, exports = cold_runs_together(parity_cache, tmp_path, ["onnxruntime", "keras"])
    assert verdicts[0] == verdicts[1]
    assert verdicts[0]["ort_tf2onnx"][0] == "pass" and verdicts[0]["keras"][0] == "pass"
    assert set(exports.values()) == {1} and "mobilenet_v2/tf2onnx" in exports
