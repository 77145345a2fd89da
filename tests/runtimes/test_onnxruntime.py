"""mobilenet_v2 and resnet18 through both torch ONNX exports in ONNX Runtime, per tap.

Real torch, real exports, real ONNX Runtime, all fixture images. The fault tests prove
the gate can fail: noise in one Conv of the exported file must fail the run and name
that layer's tap first.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from parity.backends.onnxruntime.runner import OnnxRuntimeRunner, tapped_models, torch_scope
from parity.compare import compare_taps
from parity.errors import ArtifactError, RuntimeFailure, TapError
from parity.faults import perturb_onnx_conv
from parity.harness import Session, make_runner
from parity.taps import Tap
from parity.variants import VARIANTS

pytestmark = [pytest.mark.torch, pytest.mark.onnxruntime]

#: resnet18's exports under ``-m heavy``: export and tap location do not depend on the
#: family (the Keras twins do: test_keras.py checks resnet18 by default).
MODELS = ["mobilenet_v2", pytest.param("resnet18", marks=pytest.mark.heavy)]
ORT_VARIANTS = ["ort_dynamo", "ort_torchscript"]
#: A block in the middle of each network, where an injected fault must be caught first.
FAULT_TAP = {"mobilenet_v2": "features.5", "resnet18": "layer2.1"}


@pytest.fixture(scope="module")
def default_runs(module_runs: Callable[..., None]) -> None:
    """mobilenet_v2's variants run in one prefetch (one torch worker exports both, one ONNX
    Runtime worker runs them), not a worker start per variant."""
    module_runs("mobilenet_v2", *ORT_VARIANTS)


@pytest.mark.parametrize("variant", ORT_VARIANTS)
@pytest.mark.parametrize("model", MODELS)
def test_every_tap_within_budget(fp32_parity, default_runs: None, model: str, variant: str):
    fp32_parity(model, variant)


@pytest.mark.parametrize("variant", ORT_VARIANTS)
@pytest.mark.parametrize("model", MODELS)
def test_perturbed_conv_fails_at_its_tap(
    session_for: Callable[[str], Session], model: str, variant: str, tmp_path: Path
):
    session = session_for(model)
    artifact = session.artifact(VARIANTS[variant])
    broken = tmp_path / "broken.onnx"
    target = FAULT_TAP[model]
    perturb_onnx_conv(artifact.path, broken, module=target, relative_noise=0.01)
    with OnnxRuntimeRunner(variant, broken) as runner:
        obtained = runner.run(session.batch, session.taps)
    verdict = compare_taps(
        model, variant, session.taps, session.reference, obtained, session.policy
    )
    assert not verdict.passed
    assert verdict.first_failure is not None
    assert verdict.first_failure.tap.name == target, verdict.explain()
    # Every tap before the fault still passes: the verdict localises, it does not smear.
    index = [t.tap.name for t in verdict.taps].index(target)
    assert all(t.passed for t in verdict.taps[:index])
    assert f"tap '{target}'" in verdict.explain()


def test_taps_resolve_from_module_scopes_in_both_exports(session_for: Callable[[str], Session]):
    """Both exporters' graphs locate the same taps to tensors of the reference's shapes."""
    session = session_for("mobilenet_v2")
    for variant in ORT_VARIANTS:
        with make_runner(VARIANTS[variant], session.artifact(VARIANTS[variant]), 2) as runner:
            obtained = runner.run(session.batch[:1], session.taps)
        for tap in session.taps:
            assert obtained[tap.name].shape == session.reference[tap.name][:1].shape, tap.name


def test_unknown_module_is_an_error_naming_the_tap(session_for: Callable[[str], Session]):
    session = session_for("mobilenet_v2")
    path = session.artifact(VARIANTS["ort_dynamo"]).path
    with OnnxRuntimeRunner("ort_dynamo", path) as runner, pytest.raises(TapError, match="nowhere"):
        runner.run(session.batch[:1], [Tap("nowhere", "features.99")])


def test_a_later_run_reads_the_tapped_model_from_the_cache(session_for: Callable[[str], Session]):
    """The model with its taps as outputs is made once per file and taps: a later runner
    reads it (the file is not rewritten) and returns the same values bitwise; other taps
    or other bytes are another entry."""
    session = session_for("mobilenet_v2")
    path = session.artifact(VARIANTS["ort_dynamo"]).path
    store = tapped_models(path.read_bytes(), session.taps, torch_scope, None)
    runs = []
    for _ in range(2):
        with OnnxRuntimeRunner("ort_dynamo", path) as runner:
            runs.append(runner.run(session.batch[:2], session.taps))
        runs.append(store.stat().st_mtime_ns)
    first, made, later, read = runs
    assert made == read
    assert all(np.array_equal(first[name], later[name]) for name in first)
    assert tapped_models(path.read_bytes(), session.taps[:3], torch_scope, None) != store
    assert tapped_models(path.read_bytes() + b" ", session.taps, torch_scope, None) != store


def test_output_without_taps_matches_tapped_run(session_for: Callable[[str], Session]):
    session = session_for("mobilenet_v2")
    path = session.artifact(VARIANTS["ort_dynamo"]).path
    with OnnxRuntimeRunner("ort_dynamo", path) as runner:
        plain = runner.run(session.batch, ())["output"]
        tapped = runner.run(session.batch, session.taps)["output"]
    np.testing.assert_allclose(plain, tapped, rtol=0, atol=1e-5)


def test_truncated_onnx_file_is_a_clear_error(
    session_for: Callable[[str], Session], tmp_path: Path
):
    source = session_for("mobilenet_v2").artifact(VARIANTS["ort_torchscript"]).path
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    with (
        pytest.raises(RuntimeFailure, match=r"truncated\.onnx: ONNX Runtime cannot load it"),
        OnnxRuntimeRunner("ort_torchscript", truncated) as runner,
    ):
        runner.run(session_for("mobilenet_v2").batch[:1], session_for("mobilenet_v2").taps)


def test_missing_onnx_file_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ArtifactError, match="missing.onnx: ONNX file not found"):
        OnnxRuntimeRunner("ort", tmp_path / "missing.onnx").activate()
