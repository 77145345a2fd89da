"""OpenVINO (CPU plugin) on the dynamo ONNX export and on IR converted from it, per tap.

Real torch, real exports, real OpenVINO, all fixture images. A perturbed Conv in the
file OpenVINO reads must fail the run and name that layer's tap first; reduced-precision
hints run natively or emulated (never a silent f32 run) and are judged by their class.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from deferred import deferred

from parity.backends.openvino.runner import OpenVINORunner, runtime_precisions
from parity.compare import compare_taps
from parity.errors import ArtifactError
from parity.faults import perturb_onnx_conv
from parity.harness import Session
from parity.variants import VARIANTS

ov = deferred("openvino")  # in [dev]: a missing one is an error, not a skip

pytestmark = [pytest.mark.torch, pytest.mark.openvino]

FAULT_TAP = {"mobilenet_v2": "features.5", "resnet18": "layer2.1"}
#: resnet18 under ``-m heavy``: mobilenet_v2 is checked by default.
MODELS = ["mobilenet_v2", pytest.param("resnet18", marks=pytest.mark.heavy)]


@pytest.fixture(scope="module")
def default_runs(module_runs: Callable[..., None]) -> None:
    """mobilenet_v2's OpenVINO variants run in one prefetch (one OpenVINO worker), not a
    worker start per variant."""
    module_runs("mobilenet_v2", "openvino_onnx", "openvino_f32", "openvino_bf16", "openvino_f16")


@pytest.mark.parametrize("variant", ["openvino_onnx", "openvino_f32"])
@pytest.mark.parametrize("model", MODELS)
def test_every_tap_within_budget(fp32_parity, default_runs: None, model: str, variant: str):
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
def test_reduced_precision_passes_its_class_budget_on_every_cpu(
    session_for: Callable[[str], Session], default_runs: None, variant: str
):
    """Native where the CPU executes it, emulated elsewhere: the same verdict, a bf16/f16
    budget (never the fp32 one), and the report says what it ran in."""
    session = session_for("mobilenet_v2")
    result = session.check(VARIANTS[variant])
    precision = VARIANTS[variant].options["precision"]
    assert result.status == "pass", result.error or result.verdict and result.verdict.explain()
    assert result.verdict is not None
    assert {t.budget.precision for t in result.verdict.taps} == {VARIANTS[variant].precision}
    assert result.executed is not None and result.executed.split()[0] == precision
    native = runtime_precisions_of(session, variant)
    assert ("emulated" in result.executed) == (precision not in native), (result.executed, native)


def runtime_precisions_of(session: Session, variant: str) -> set[str]:
    """What the CPU plugin runs the hint's compute ops in here (no emulation)."""
    artifact = session.artifact(VARIANTS[variant])
    config = {"INFERENCE_PRECISION_HINT": VARIANTS[variant].options["precision"]}
    compiled = ov.Core().compile_model(str(artifact.path), "CPU", config)
    return set(runtime_precisions(compiled))


def test_emulated_bf16_fault_fails_at_its_tap(
    session_for: Callable[[str], Session], tmp_path: Path
):
    """A fault bf16 noise cannot hide (features.5 weights 10% off) fails openvino_bf16 at
    features.5 under the bf16 budgets, whatever the CPU."""
    model, variant, target = "mobilenet_v2", "openvino_bf16", FAULT_TAP["mobilenet_v2"]
    session = session_for(model)
    artifact = session.artifact(VARIANTS[variant])
    broken = tmp_path / "broken.onnx"
    perturb_onnx_conv(session.artifact(VARIANTS["ort_dynamo"]).path, broken, module=target,
                      relative_noise=0.5)  # fmt: skip
    ov.save_model(ov.convert_model(str(broken)), str(tmp_path / "broken.xml"), False)
    tap_values = artifact.metadata["runner_options"]["tap_values"]
    with OpenVINORunner(variant, tmp_path / "broken.xml", tap_values=tap_values,
                        precision="bf16") as runner:  # fmt: skip
        obtained = runner.run(session.batch, session.taps)
    verdict = compare_taps(model, variant, session.taps, session.reference, obtained,
                           session.policy)  # fmt: skip
    assert verdict.first_failure is not None, "a 50% weight fault passed the bf16 budgets"
    assert verdict.first_failure.tap.name == target, verdict.explain()


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
