"""Two cold ``parity run`` processes started together on one cache both succeed alike.

The cache's per-artifact file lock (:mod:`parity.artifacts`) lets the first process export
while the other waits and then reads its result: every artifact is exported once (the
cache's ``exports.log``), and both runs give the same verdicts and the same numbers. Real
CLI, real workers, real exports from an empty artifact cache (the calibrated weights are
shared: they are not what is tested). The default test runs the tiny custom model
(tests/data/tinynet: the lock, not the model, is under test); heavy: mobilenet_v2 with
tf2onnx, every ONNX variant and the Keras twin.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from parity.artifacts import EXPORT_LOG
from parity.scaffold import init_project

TINYNET = Path(__file__).resolve().parent / "data" / "tinynet"

pytestmark = [pytest.mark.torch, pytest.mark.onnxruntime, pytest.mark.keras]


def cold_runs_together(
    parity_cache: Path, tmp_path: Path, model: str, runtimes: list[str]
) -> tuple[list[dict[str, tuple[str, object]]], Counter[str]]:
    """Start two ``parity run`` on one empty cache at once (in a project holding tinynet's
    card); each one's verdicts by variant (status, every tap's max_abs_norm) and how often
    each artifact was exported."""
    project = tmp_path / "project"
    init_project(project)
    shutil.copy2(TINYNET / "tinynet.py", project / "tinynet.py")
    shutil.copy2(TINYNET / "tiny.toml", project / "parity/models/tiny.toml")
    cache = tmp_path / "cache"
    cache.mkdir()
    (parity_cache / "weights").mkdir(exist_ok=True)
    (cache / "weights").symlink_to(parity_cache / "weights")  # calibrated once, shared
    env = {k: v for k, v in os.environ.items() if k != "PARITY_HOME"}
    env["PARITY_CACHE_DIR"] = str(cache)
    reports = [tmp_path / f"run{i}.json" for i in (1, 2)]
    command = [sys.executable, "-m", "parity.cli", "run", "-q", "--summary", "-m", model]
    runs = [
        subprocess.Popen(
            [*command, *(f"-r{r}" for r in runtimes), "--json", str(report)],
            env=env,
            cwd=project,
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
    runtimes = ["ort_dynamo", "ort_dynamo_noopt"]
    verdicts, exports = cold_runs_together(parity_cache, tmp_path, "tiny", runtimes)
    assert verdicts[0] == verdicts[1]
    assert {v: s for v, (s, _) in verdicts[0].items()} == {name: "pass" for name in runtimes}
    assert exports == {"tiny/onnx_dynamo": 1}


@pytest.mark.heavy
def test_two_cold_runs_with_tf2onnx_and_every_onnx_variant_agree(
    parity_cache: Path, tmp_path: Path
):
    runtimes = ["onnxruntime", "keras"]
    verdicts, exports = cold_runs_together(parity_cache, tmp_path, "mobilenet_v2", runtimes)
    assert verdicts[0] == verdicts[1]
    assert verdicts[0]["ort_tf2onnx"][0] == "pass" and verdicts[0]["keras"][0] == "pass"
    assert set(exports.values()) == {1} and "mobilenet_v2/tf2onnx" in exports
