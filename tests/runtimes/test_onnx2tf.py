"""The onnx2tf route, for real: the converter environment is made (pip, minutes, ~2.6 GB;
already made: seconds), mobilenet_v2 passes every onnx2tf variant with its taps located by
shape and order, and a 1% scale on one conv weight fails at that conv's tap.

All heavy: each conversion starts TensorFlow in the converter environment (tens of
seconds). ``tox -e onnx2tf`` runs them; the default tier checks the mechanism
(tests/test_converters.py)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from parity.cli import main
from parity.converters import spec
from parity.converters.environment import install
from parity.runner import OUTPUT

pytestmark = [pytest.mark.onnx2tf, pytest.mark.heavy]

#: Converts mobilenet_v2 with a 1% scale on features.7's expand conv (argv[1]: out), in
#: its own process as the torch worker does.
CONVERT_SCALED = """\
import copy, json, sys
from pathlib import Path
import torch
from parity.artifacts import ArtifactCache, BuildContext
from parity.export.onnx2tf import export_fp32
from parity.weights import LoadedModel, load_model
from parity.zoo import get_card

out, card = Path(sys.argv[1]), get_card("mobilenet_v2")
broken = copy.deepcopy(load_model(card).module)
with torch.no_grad():
    broken.features[7].conv[0][0].weight.mul_(1.01)
cache = ArtifactCache(out.parent / "cache")
ctx = BuildContext(card, lambda: LoadedModel(broken, "scaled", "-"), cache)
out.with_suffix(".json").write_text(json.dumps(export_fp32(ctx, out, {"mode": "fp32"})))
"""


@pytest.fixture(scope="module")
def onnx2tf_env() -> Path:
    """The onnx2tf environment, made from the shipped spec with pip's configured index."""
    record = install(spec("onnx2tf"), progress=lambda line: None)
    assert record["name"] == "onnx2tf" and "onnx2tf==1.29.24" in record["installed"]
    made = spec("onnx2tf").installed()
    assert made is not None
    return made


def test_mobilenet_v2_passes_every_onnx2tf_variant(onnx2tf_env: Path, tmp_path: Path, capsys):
    report = tmp_path / "report.json"
    code = main(["run", "-q", "-m", "mobilenet_v2", "-r", "onnx2tf", "--json", str(report)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    variants = {v["name"]: v for v in json.loads(report.read_text())["variants"]}
    assert set(variants) == {"onnx2tf_fp32", "onnx2tf_fp32_noxnn", "onnx2tf_fp16",
                             "onnx2tf_dynamic"}  # fmt: skip
    for name, variant in variants.items():
        assert variant["status"] == "pass", (name, variant["status"])
        assert len(variant["taps"]) == 21, name  # every tap located and judged


def test_a_scaled_conv_fails_at_its_tap(onnx2tf_env: Path, tmp_path: Path):
    """A 1% scale on features.7's expand conv before export: the taps before it pass
    (located by shape and order, within fp32 budgets), the first failing tap is features.7."""
    from parity.backends.litert_torch.runner import LiteRTTorchRunner
    from parity.backends.torch.runner import TorchRunner
    from parity.compare import compare_taps
    from parity.harness import RunConfig, Session
    from parity.weights import load_model

    session = Session(RunConfig(model="mobilenet_v2"))
    card = session.card
    with TorchRunner("torch", load_model(card).module) as runner:
        reference = runner.run(session.batch, session.taps)
    reference.pop(OUTPUT)
    out = tmp_path / "model.tflite"
    done = subprocess.run(
        [sys.executable, "-c", CONVERT_SCALED, str(out)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metadata = json.loads(out.with_suffix(".json").read_text())
    how = {m["tap"]: m["how"] for m in metadata["tap_matching"]}
    assert how["logits"] == "final output" and "module path" not in how.values(), how
    assert all(m["tensor"] for m in metadata["tap_matching"]), metadata["tap_matching"]
    with LiteRTTorchRunner("onnx2tf_fp32", out, **metadata["runner_options"]) as runner:
        obtained = runner.run(session.batch, session.taps)
    verdict = compare_taps(
        card.name, "onnx2tf_fp32", session.taps, reference, obtained, session.policy
    )
    passed = {t.tap.name: t.passed for t in verdict.taps}
    assert all(passed[f"features.{i}"] for i in range(1, 7)), verdict.explain()
    assert verdict.first_failure is not None and verdict.first_failure.tap.name == "features.7"
    failed = next(t for t in verdict.taps if t.tap.name == "features.7")
    limit = session.policy.budget(card.name, "onnx2tf_fp32", "features.7").limits["max_abs_norm"]
    assert failed.metrics.max_abs_norm > 10 * limit


#: A custom model (conv+BN+ReLU6, depthwise, residual, pool, linear) and its card.
TINYNET = Path(__file__).resolve().parents[1] / "data" / "tinynet"


def test_a_custom_model_passes_with_every_tap_located(
    onnx2tf_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
):
    """The custom tinynet: its residual branch's tap has the main path's shape, so the order
    rules cannot place dw, block.conv1 and block; the fp32 budget tells them apart by value."""
    monkeypatch.delenv("PARITY_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["init"]) == 0
    shutil.copy2(TINYNET / "tinynet.py", tmp_path / "tinynet.py")
    shutil.copy2(TINYNET / "tiny.toml", tmp_path / "parity/models/tiny.toml")
    report = tmp_path / "report.json"
    code = main(["run", "-q", "-m", "tiny", "-r", "onnx2tf_fp32", "--json", str(report)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    (variant,) = json.loads(report.read_text())["variants"]
    assert variant["status"] == "pass" and len(variant["taps"]) == 6
    (meta,) = Path(os.environ["PARITY_CACHE_DIR"]).glob("artifacts/tiny/onnx2tf_fp32-*/meta.json")
    how = {m["tap"]: m["how"] for m in json.loads(meta.read_text())["tap_matching"]}
    assert how["block.conv1"] == "numeric" and all(m != "unmatched" for m in how.values()), how
