"""What crosses to a worker process: a RunConfig and a ModelContext survive JSON unchanged,
and the context reads the torch worker's hand-off from its run directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from parity.context import BATCH, WEIGHTS, ModelContext
from parity.runconfig import RunConfig


def test_a_context_survives_json_unchanged(tmp_path: Path) -> None:
    config = RunConfig(
        model="mobilenet_v2", runtimes=("onnxruntime", "litert"), fixtures=tmp_path / "f",
        weights="calibrated", tolerances=tmp_path / "t.toml", taps=("logits",), threads=3,
        rebuild=True, cache_root=tmp_path / "c", goldens=tmp_path / "g", bundle=None,
        artifact=tmp_path / "m.onnx", tap_map=tmp_path / "map.toml", strict=True, jobs=2,
        timeout=12.5,
    )  # fmt: skip
    batch = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    context = ModelContext.write(tmp_path, config, batch, "ab" * 32)
    again = ModelContext.from_dict(json.loads(json.dumps(context.to_dict())))
    assert again == context
    assert isinstance(again.config.cache_root, Path) and again.config.taps == ("logits",)
    np.testing.assert_array_equal(again.batch(), batch)
    assert (tmp_path / BATCH).is_file() and again.handed() is None  # before the torch worker


def test_a_worker_reads_the_weights_handed_over(tmp_path: Path) -> None:
    context = ModelContext.write(tmp_path, RunConfig(), np.zeros((1, 3, 2, 2), np.float32))
    (tmp_path / WEIGHTS).write_text(json.dumps({"source": "calibrated", "sha256": "cd" * 32}))
    handed = context.handed()
    assert handed is not None and handed.sha256 == "cd" * 32
    assert handed.state_dict_path.parent == tmp_path
    assert context.reference() is None  # the reference taps: not written yet
