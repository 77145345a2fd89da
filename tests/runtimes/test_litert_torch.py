"""The litert-torch route: taps by module path, a perturbed conversion fails at its tap."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from parity.cli import main
from parity.runner import OUTPUT

pytestmark = pytest.mark.litert_torch

#: The route's converter is the 'litert-torch' extra, not in [dev] (its xdsl pin clashes with
#: tox's typing-extensions): without it the conversions are n/a, as for a user, and these
#: tests are visible skips; `tox -e litert-torch` runs them with the extra installed.
needs_converter = pytest.mark.skipif(
    importlib.util.find_spec("litert_torch") is None,
    reason="litert-torch not installed (extra 'litert-torch'; tox -e litert-torch)",
)

#: A custom model (conv+BN+ReLU6, depthwise, residual, pool, linear) and its card.
TINYNET = Path(__file__).resolve().parents[1] / "data" / "tinynet"


#: Converts the custom model with a 1% scale on ``block.conv2``'s weight (argv[1]: out).
CONVERT_SCALED = """\
import copy, json, sys
from pathlib import Path
import torch
from parity.artifacts import ArtifactCache, BuildContext
from parity.backends.litert_torch.convert import export_fp32
from parity.weights import LoadedModel, load_model
from parity.zoo import get_card

out, card = Path(sys.argv[1]), get_card("tiny")
broken = copy.deepcopy(load_model(card).module)
with torch.no_grad():
    broken.block.conv2[0].weight.mul_(1.01)
cache = ArtifactCache(out.parent / "cache")
ctx = BuildContext(card, lambda: LoadedModel(broken, "scaled", "-"), cache)
out.with_suffix(".json").write_text(json.dumps(export_fp32(ctx, out, {})))
assert "tensorflow" not in sys.modules, "litert-torch converted with TensorFlow imported"
"""


@pytest.fixture
def tiny_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> Path:
    """``parity init`` in an empty directory with the custom model's card."""
    monkeypatch.delenv("PARITY_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["init"]) == 0
    capsys.readouterr()
    shutil.copy2(TINYNET / "tinynet.py", tmp_path / "tinynet.py")
    shutil.copy2(TINYNET / "tiny.toml", tmp_path / "parity/models/tiny.toml")
    return tmp_path


@needs_converter
def test_scaled_conv_in_the_converted_module_fails_at_its_tap(tiny_project: Path, tmp_path: Path):
    """A 1% scale on one conv weight before conversion: the taps before it pass (located by
    module path, within fp32 budgets), the first failing tap is the block holding it."""
    from parity.backends.litert_torch.runner import LiteRTTorchRunner
    from parity.backends.torch.runner import TorchRunner
    from parity.compare import compare_taps
    from parity.harness import RunConfig, Session
    from parity.weights import load_model

    session = Session(RunConfig(model="tiny"))
    card = session.card
    with TorchRunner("torch", load_model(card).module) as runner:
        reference = runner.run(session.batch, session.taps)
    reference.pop(OUTPUT)
    # The conversion runs in its own process, as in the torch worker (litert-torch and jax
    # stay out of the test process).
    out = tmp_path / "model.tflite"
    done = subprocess.run(
        [sys.executable, "-c", CONVERT_SCALED, str(out)],
        cwd=tiny_project,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    metadata = json.loads(out.with_suffix(".json").read_text())
    assert "litert_torch" not in sys.modules
    how = {m["tap"]: m["how"] for m in metadata["tap_matching"]}
    assert how == {
        "stem": "module path", "dw": "module path", "block.conv1": "module path",
        "block": "module path", "pooled": "shape-unique", "logits": "final output",
    }  # fmt: skip
    with LiteRTTorchRunner("litert_torch_fp32", out, **metadata["runner_options"]) as runner:
        obtained = runner.run(session.batch, session.taps)
    verdict = compare_taps(
        card.name, "litert_torch_fp32", session.taps, reference, obtained, session.policy
    )
    passed = {t.tap.name: t.passed for t in verdict.taps}
    assert passed["stem"] and passed["dw"] and passed["block.conv1"], verdict.explain()
    assert verdict.first_failure is not None and verdict.first_failure.tap.name == "block"
    block = next(t for t in verdict.taps if t.tap.name == "block")
    assert (
        block.metrics.max_abs_norm
        > 10 * session.policy.budget(card.name, "litert_torch_fp32", "block").limits["max_abs_norm"]
    )


@pytest.mark.heavy
@needs_converter
def test_custom_card_passes_every_litert_torch_variant_through_the_workers(
    tiny_project: Path, capsys
):
    """The whole route (torch worker converts and quantises, LiteRT runs) on a custom model."""
    report = tiny_project / "report.json"
    code = main(["run", "-q", "-m", "tiny", "-r", "litert_torch_fp32", "--json", str(report)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    (variant,) = json.loads(report.read_text())["variants"]
    assert variant["status"] == "pass"
    assert np.isfinite(variant["taps"][0]["metrics"]["max_abs_norm"])


def test_the_torch_worker_makes_the_files_and_litert_runs_them():
    from parity.variants import VARIANTS
    from parity.workers import plan

    jobs = {j.name: j for j in plan(["litert_torch_int8"], VARIANTS, None, True)}
    exports = [t["exporter"] for t in jobs["torch"].tasks]
    assert exports == ["litert_torch_fp32", "litert_torch_int8"] and jobs["torch"].reference
    runs = jobs["litert_torch"]
    assert [t["name"] for t in runs.tasks] == ["litert_torch_int8"]
    assert runs.needs == {"reference", "export-litert_torch_fp32", "export-litert_torch_int8"}
