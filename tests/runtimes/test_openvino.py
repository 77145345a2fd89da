"""OpenVINO (CPU plugin) on the dynamo ONNX export and on IR converted from it, per tap.

Real torch, real exports, real OpenVINO, all fixture images. A perturbed Conv in the
file OpenVINO reads must fail the run and name that layer's tap first; reduced-precision
hints the CPU cannot execute are ``n/a`` with the reason, never a silent f32 pass.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from parity.backends.openvino.runner import OpenVINORunner, precision_unavailable
from parity.compare import compare_taps
from parity.errors import ArtifactError
from parity.faults import perturb_onnx_conv
from parity.harness import Session
from parity.variants import VARIANTS

ov = pytest.importorskip("openvino")

pytestmark = [pytest.mark.torch, pytest.mark.openvino]

FAULT_TAP = {"mobilenet_v2": "features.5", "resnet18": "layer2.1"}
#: resnet18 under ``-m heavy``: mobilenet_v2 is checked by default.
MODELS = ["mobilenet_v2", pytest.param("resnet18", marks=pytest.mark.heavy)]


@pytest.mark.parametrize("variant", ["openvino_onnx", "openvino_f32"])
@pytest.mark.parametrize("model", MODELS)
def test_every_tap_within_budget(fp32_parity, model: str, variant: str):
    fp32_parity(model, variant)


@pytest.mark.parametrize("variant", ["openvino_onnx", "openvino_f32"])
def test_perturbed_conv_fails_at_its_tap(
    session_for: Callable[[str], Session], variant: str, tmp_path: Path
):
    model = "mobilenet_v2"
    session = session_for(model)
    artifact = session.artifact(VARIANTS[variant])
    target = FAULT_TAP[model]
    broken = tmp_path / "broken.onnx"
    perturb_onnx_conv(session.artifact(VARIANTS["ort_dynamo"]).path, broken, module=target)
    if artifact.path.suffix == ".xml":  # the same fault, converted to IR like the artifact
        ov.save_model(ov.convert_model(str(broken)), str(tmp_path / "broken.xml"), False)
        broken = tmp_path / "broken.xml"
    tap_values = artifact.metadata["runner_options"]["tap_values"]
    with OpenVINORunner(variant, broken, tap_values=tap_values) as runner:
        obtained = runner.run(session.batch, session.taps)
    verdict = compare_taps(
        model, variant, session.taps, session.reference, obtained, session.policy
    )
    assert verdict.first_failure is not None
    assert verdict.first_failure.tap.name == target, verdict.explain()
    index = [t.tap.name for t in verdict.taps].index(target)
    assert all(t.passed for t in verdict.taps[:index])


@pytest.mark.parametrize("variant", ["openvino_bf16", "openvino_f16"])
def test_reduced_precision_runs_or_is_not_applicable(
    session_for: Callable[[str], Session], variant: str
):
    result = session_for("mobilenet_v2").check(VARIANTS[variant])
    reason = precision_unavailable(VARIANTS[variant].options)
    if reason is None:  # a CPU with bf16/f16 execution: judged like any variant
        assert result.status in ("pass", "fail") and result.verdict is not None
    else:
        assert result.status == "n/a"
        assert result.reason == reason and "OPTIMIZATION_CAPABILITIES" in reason


def test_modified_ir_weights_are_refused(session_for: Callable[[str], Session], tmp_path: Path):
    artifact = session_for("mobilenet_v2").artifact(VARIANTS["openvino_f32"])
    xml = tmp_path / "model.xml"
    xml.write_bytes(artifact.path.read_bytes())
    weights = bytearray(artifact.path.with_suffix(".bin").read_bytes())
    weights[1000] ^= 0xFF
    xml.with_suffix(".bin").write_bytes(bytes(weights))
    options = artifact.metadata["runner_options"]
    with pytest.raises(ArtifactError, match=r"model\.bin: OpenVINO IR weights missing or modified"):
        OpenVINORunner("openvino_f32", xml, **options).activate()
