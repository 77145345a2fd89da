"""The Keras twins converted by tf2onnx, in ONNX Runtime (``ort_tf2onnx``), per tap.

Real torch reference, real Keras artifacts, real tf2onnx conversions, all fixture images.
tf2onnx graphs carry Keras names, not torch module scopes, so the exporter records a
tap -> ONNX value map; these tests check that it resolves every card tap to a value of
the reference's shape, that it avoids the two naming traps of tf2onnx (the input
Transpose named after the first BatchNorm, and the Dense MatMul before its bias add),
and that the gate passes.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parity.backends.onnxruntime.runner import OnnxRuntimeRunner
from parity.errors import TapError
from parity.export.tf2onnx import OPSET, locate_tap_values, node_layers
from parity.harness import Session, make_runner
from parity.taps import Tap
from parity.variants import VARIANTS

pytestmark = [pytest.mark.torch, pytest.mark.keras, pytest.mark.onnxruntime]

#: resnet18 through tf2onnx runs under ``-m heavy`` (its Keras twin is checked by default).
MODELS = ["mobilenet_v2", pytest.param("resnet18", marks=pytest.mark.heavy)]
VARIANT = VARIANTS["ort_tf2onnx"]


def keras_layer_names(path: Path) -> list[str]:
    """The layer names of a Keras 3 file, in ``model.layers`` order, read from its
    config.json (no Keras, no TensorFlow in this process)."""
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    return [layer["config"]["name"] for layer in config["config"]["layers"]]


def load(session: Session) -> tuple[Any, dict[str, Any], list[str]]:
    """The converted ONNX model, its runner options and the Keras layer names."""
    import onnx

    artifact = session.artifact(VARIANT)
    layers = keras_layer_names(session.artifact(VARIANTS["keras"]).path)
    return onnx.load(str(artifact.path)), artifact.metadata["runner_options"], layers


@pytest.fixture(scope="module")
def default_runs(module_runs: Callable[..., None]) -> None:
    """mobilenet_v2's tf2onnx run, its outputs released at the module's end."""
    module_runs("mobilenet_v2", VARIANT.name)


@pytest.mark.parametrize("model", [*MODELS, pytest.param("resnet50", marks=pytest.mark.heavy)])
def test_every_tap_within_budget(fp32_parity, default_runs: None, model: str):
    result = fp32_parity(model, VARIANT.name)
    assert result.artifact is not None and result.artifact.metadata["opset"] == OPSET


@pytest.mark.parametrize("model", MODELS)
def test_tap_values_resolve_every_card_tap(session_for: Callable[[str], Session], model: str):
    session = session_for(model)
    proto, options, _ = load(session)
    assert options["input_layout"] == "NHWC"
    assert options["tap_layout"] == "NCHW"  # measured per tap at export, not assumed
    tap_values = options["tap_values"]
    assert set(tap_values) == {t.name for t in session.card.taps}
    producers = {v: n for n in proto.graph.node for v in n.output}
    assert set(tap_values.values()) <= set(producers)
    assert len(set(tap_values.values())) == len(tap_values)  # no two taps share a value
    # The logits are the graph output itself, never the MatMul before the bias add.
    assert tap_values["logits"] == proto.graph.output[0].name
    # No tap is the NHWC->NCHW Transpose of the input.
    graph_input = proto.graph.input[0].name
    assert all(graph_input not in producers[v].input for v in tap_values.values())


@pytest.mark.parametrize("model", MODELS)
def test_shapes_match_the_reference_after_layout_conversion(
    session_for: Callable[[str], Session], model: str
):
    session = session_for(model)
    with make_runner(VARIANT, session.artifact(VARIANT), 2) as runner:
        assert (runner.input_layout, runner.tap_layout) == ("NHWC", "NCHW")
        obtained = runner.run(session.batch[:2], session.taps)
    for tap in session.taps:
        assert obtained[tap.name].shape == session.reference[tap.name][:2].shape, tap.name
    assert obtained["output"].shape == (2, session.card.num_classes)


@pytest.mark.parametrize(
    ("model", "conv", "bn"),
    [
        ("mobilenet_v2", "features.0.0", "features.0.1"),
        pytest.param("resnet18", "conv1", "bn1", marks=pytest.mark.heavy),
    ],
)
def test_trap_input_transpose_named_after_the_first_batchnorm(
    session_for: Callable[[str], Session], model: str, conv: str, bn: str
):
    """The input Transpose borrows the first BatchNorm's name; the rule steps around it."""
    proto, _, layers = load(session_for(model))
    (transpose,) = [n for n in proto.graph.node if proto.graph.input[0].name in n.input]
    assert transpose.op_type == "Transpose" and f"/{bn}_" in transpose.name
    owners = dict(zip((n.name for n in proto.graph.node), node_layers(proto, layers), strict=True))
    assert owners[transpose.name] == set()
    # ... while the BatchNorm's output is the fused Conv (conv + bn) after it.
    value = locate_tap_values(proto, {bn: bn}, layers)[bn]
    (fused,) = [n for n in proto.graph.node if value in n.output]
    assert fused.op_type == "Conv" and owners[fused.name] == {conv, bn}


@pytest.mark.heavy
def test_trap_dense_bias(session_for: Callable[[str], Session]):
    """resnet18's fc MatMul writes the product before the bias add; fc's value is the sum
    (mobilenet_v2's classifier has no separate bias add)."""
    proto, _, layers = load(session_for("resnet18"))
    nodes = {n.name: n for n in proto.graph.node}
    bn1 = locate_tap_values(proto, {"bn1": "bn1"}, layers)["bn1"]
    assert nodes["resnet_1/relu_1/Relu"].input[0] == bn1
    assert "resnet_1/fc_1/MatMul" in nodes
    assert locate_tap_values(proto, {"logits": "fc"}, layers) == {"logits": "fc"}
    assert nodes["resnet_1/fc_1/BiasAdd"].output[0] == "fc"


def test_layer_without_nodes_is_an_error_naming_the_tap(session_for: Callable[[str], Session]):
    proto, _, layers = load(session_for("mobilenet_v2"))
    with pytest.raises(TapError, match=r"tap 'ghost'.*'features\.99'"):
        locate_tap_values(proto, {"ghost": "features.99"}, [*layers, "features.99"])


def test_runner_tap_map_errors_name_the_tap(session_for: Callable[[str], Session]):
    session = session_for("mobilenet_v2")
    artifact = session.artifact(VARIANT)
    options = artifact.metadata["runner_options"]
    values = dict(options["tap_values"])
    taps = [Tap("stem", "features.0"), Tap("extra", "features.1")]
    kwargs = {"input_layout": "NHWC", "tap_layout": "NCHW"}
    with (
        OnnxRuntimeRunner("ort_tf2onnx", artifact.path, tap_values=values, **kwargs) as runner,
        pytest.raises(TapError, match="tap 'extra'"),
    ):
        runner.run(session.batch[:1], taps)
    values["stem"] = "mobilenet_v2_1/nowhere:0"
    with (
        OnnxRuntimeRunner("ort_tf2onnx", artifact.path, tap_values=values, **kwargs) as runner,
        pytest.raises(TapError, match=r"tap 'stem'.*nowhere:0"),
    ):
        runner.run(session.batch[:1], taps[:1])


def test_output_without_taps_matches_tapped_run(session_for: Callable[[str], Session]):
    session = session_for("mobilenet_v2")
    with make_runner(VARIANT, session.artifact(VARIANT), 2) as runner:
        plain = runner.run(session.batch, ())["output"]
        tapped = runner.run(session.batch, session.taps)["output"]
    np.testing.assert_allclose(plain, tapped, rtol=0, atol=1e-5)
