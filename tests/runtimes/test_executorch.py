"""The ExecuTorch route: taps as program outputs; a 1% scale on one conv weight in the .pte
fails at that conv's tap, for the XNNPACK and the portable lowering."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from parity.cli import main
from parity.harness import Session
from parity.result import VariantResult
from parity.runner import OUTPUT

pytestmark = pytest.mark.executorch

#: The route needs the 'executorch' extra: without it its variants are n/a (as for a user)
#: and these tests are visible skips; `tox -e executorch` runs them with the extra.
needs_executorch = pytest.mark.skipif(
    importlib.util.find_spec("executorch") is None,
    reason="executorch not installed (extra 'executorch'; tox -e executorch)",
)

#: A custom model (conv+BN+ReLU6, depthwise, residual, pool, linear) and its card.
TINYNET = Path(__file__).resolve().parents[1] / "data" / "tinynet"


def scale_weight(pte: Path, out: Path, candidates: list[np.ndarray], factor: float) -> None:
    """Copy ``pte`` to ``out`` with one float32 constant scaled by ``factor`` in place.

    The constant is the one blob of the program whose values are those of one of
    ``candidates`` (the conv weight as torch has it, or with its BatchNorm folded in, as
    XNNPACK's partitioner stores it) in any element order (XNNPACK keeps OHWI, not OIHW).
    The blobs are listed with ExecuTorch's own (private) deserialiser; the file's bytes are
    then patched where that blob lies, so nothing else in the program changes.
    """
    from executorch.exir._serialize._program import deserialize_pte_binary

    data = bytearray(pte.read_bytes())
    pte_file = deserialize_pte_binary(bytes(data))
    blobs = [bytes(b.storage) for b in pte_file.program.constant_buffer]
    if pte_file.named_data is not None:
        blobs += [bytes(b) for b in pte_file.named_data.buffers]
    wanted = [np.sort(c.astype(np.float32).ravel()) for c in candidates]

    def matches(blob: bytes) -> bool:
        n = len(wanted[0])
        if len(blob) < 4 * n:
            return False
        values = np.sort(np.frombuffer(blob[: 4 * n], np.float32))
        return any(np.allclose(values, w, rtol=1e-4, atol=1e-7) for w in wanted)

    (blob,) = [b[: 4 * len(wanted[0])] for b in blobs if matches(b)]
    start = data.find(blob)
    assert start >= 0 and data.find(blob, start + 1) < 0
    scaled = np.frombuffer(blob, np.float32) * np.float32(factor)
    data[start : start + len(blob)] = scaled.astype(np.float32).tobytes()
    out.write_bytes(bytes(data))


def folded(conv, bn) -> np.ndarray:
    """``conv``'s weight with ``bn`` folded in, as XNNPACK's partitioner stores it."""
    w = conv.weight.detach().numpy()
    scale = (bn.weight / (bn.running_var + bn.eps).sqrt()).detach().numpy()
    return w * scale[:, None, None, None]


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


@needs_executorch
@pytest.mark.parametrize("lowering", ["xnnpack", pytest.param("portable", marks=pytest.mark.heavy)])
def test_scaled_conv_in_the_program_fails_at_its_tap(
    tiny_project: Path, tmp_path: Path, lowering: str
):
    """The converted program passes every tap (each located as a program output); with
    block.conv2's weight scaled by 1% in the .pte, the taps before it pass and the first
    failing tap is the block holding it, far over its budget."""
    from parity.artifacts import BuildContext
    from parity.backends import get_exporter
    from parity.backends.executorch.runner import ExecuTorchRunner
    from parity.backends.torch.runner import TorchRunner
    from parity.compare import compare_taps
    from parity.harness import RunConfig
    from parity.weights import load_model

    session = Session(RunConfig(model="tiny"))
    card, variant = session.card, f"executorch_{lowering}"
    loaded = load_model(card)
    with TorchRunner("torch", loaded.module) as runner:
        reference = runner.run(session.batch, session.taps)
    reference.pop(OUTPUT)
    context = BuildContext(card, lambda: loaded, session.cache)
    artifact = session.cache.get(get_exporter(variant), context)
    assert {m["how"] for m in artifact.metadata["tap_matching"]} == {"program output"}
    # XNNPACK takes the whole graph (no op left to the portable kernels); portable, none.
    converter = artifact.metadata["converter"]
    delegated = (converter["delegate_calls"], converter["kernel_ops"].get("aten.convolution.out"))
    assert delegated == ((1, None) if lowering == "xnnpack" else (0, 4)), converter
    assert lowering == "portable" or converter["kernel_ops"] == {}, converter
    conv, bn = loaded.module.block.conv2[0], loaded.module.block.conv2[1]
    broken = tmp_path / "scaled.pte"
    scale_weight(artifact.path, broken, [conv.weight.detach().numpy(), folded(conv, bn)], 1.01)
    verdicts = {}
    for name, path in (("converted", artifact.path), ("scaled", broken)):
        options = artifact.metadata["runner_options"]
        with ExecuTorchRunner(variant, path, **options) as runner:
            obtained = runner.run(session.batch, session.taps)
        verdicts[name] = compare_taps(
            card.name, variant, session.taps, reference, obtained, session.policy
        )
    assert verdicts["converted"].passed, verdicts["converted"].explain()
    scaled = verdicts["scaled"]
    passed = {t.tap.name: t.passed for t in scaled.taps}
    assert passed["stem"] and passed["dw"] and passed["block.conv1"], scaled.explain()
    assert scaled.first_failure is not None and scaled.first_failure.tap.name == "block"
    block = next(t for t in scaled.taps if t.tap.name == "block")
    limit = session.policy.budget(card.name, variant, "block").limits["max_abs_norm"]
    assert block.metrics.max_abs_norm > 10 * limit


def test_the_torch_worker_makes_the_program_and_executorch_runs_it():
    from parity.variants import VARIANTS
    from parity.workers import plan

    jobs = {j.name: j for j in plan(["executorch_xnnpack"], VARIANTS, None, True)}
    assert [t["exporter"] for t in jobs["torch"].tasks] == ["executorch_xnnpack"]
    runs = jobs["executorch"]
    assert [t["name"] for t in runs.tasks] == ["executorch_xnnpack"]
    assert runs.needs == {"reference", "export-executorch_xnnpack"}


@pytest.mark.heavy
@needs_executorch
@pytest.mark.parametrize("lowering", ["xnnpack", "portable"])
def test_mobilenet_v2_passes_and_a_scaled_pointwise_conv_fails_at_its_block(
    session_for: Callable[[str], Session],
    fp32_parity: Callable[[str, str], VariantResult],
    tmp_path: Path,
    lowering: str,
):
    """Through the workers (converted in the torch worker, run in ExecuTorch's): every tap
    passes; features.17's projection conv scaled by 1% in the .pte fails first at features.17."""
    from parity.backends.executorch.runner import ExecuTorchRunner
    from parity.compare import compare_taps
    from parity.variants import VARIANTS
    from parity.weights import load_model

    variant = f"executorch_{lowering}"
    fp32_parity("mobilenet_v2", variant)
    session = session_for("mobilenet_v2")
    artifact = session.artifact(VARIANTS[variant])
    project = load_model(session.card).module.features[17].conv
    broken = tmp_path / "scaled.pte"
    candidates = [project[2].weight.detach().numpy(), folded(project[2], project[3])]
    scale_weight(artifact.path, broken, candidates, 1.01)
    with ExecuTorchRunner(variant, broken, **artifact.metadata["runner_options"]) as runner:
        obtained = runner.run(session.batch, session.taps)
    verdict = compare_taps(
        "mobilenet_v2", variant, session.taps, session.reference, obtained, session.policy
    )
    assert verdict.first_failure is not None, verdict.explain()
    assert verdict.first_failure.tap.name == "features.17", verdict.explain()
