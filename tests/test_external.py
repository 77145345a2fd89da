"""Artifacts made elsewhere: parity pointed at ONNX / TFLite / Keras files it did not export.

Every file is made during the test run, the way a third party would make it: the
project's ONNX export with every node and value renamed to opaque names behind a new
NHWC input and a Transpose; a TFLite file converted from a differently assembled Keras
model (NCHW input + Permute around parity's twin) through ``model.export`` and
``TFLiteConverter.from_saved_model``, in fp32 and full int8; and bad files (not a model,
the wrong number of classes, the wrong input size, an input whose layout cannot be told).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from parity.cli import main
from parity.errors import ParityError
from parity.external import check_artifact, check_external
from parity.faults import perturb_onnx_conv
from parity.harness import RunConfig, Session
from parity.paths import fixtures_dir
from parity.result import VariantResult
from parity.variants import VARIANTS

pytestmark = [pytest.mark.torch, pytest.mark.onnxruntime]

#: How each tap may be located; "unmatched" never appears in a passing foreign file here.
HOWS = {"final output", "explicit", "shape-unique", "shape-order", "numeric"}


# -- how third parties make their files ------------------------------------------------


def opaque_nhwc_onnx(source: Path, target: Path) -> None:
    """``source`` with every node and intermediate value renamed and an NHWC input.

    Module scopes (node names, metadata) are gone, so parity cannot use them; the new
    input ``image`` (batch, 224, 224, 3) feeds a Transpose to the old NCHW graph, as a
    converter's layout adapter does.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(source))
    graph = model.graph
    old_input, old_output = graph.input[0].name, graph.output[0].name
    names = {old_input: "nchw", old_output: "logits"}
    for node in graph.node:
        for value in node.output:
            names.setdefault(value, f"t{len(names):04d}")
    for index, node in enumerate(graph.node):
        node.name = f"op{index:04d}"
        del node.metadata_props[:]
        for slot, value in enumerate(node.input):
            node.input[slot] = names.get(value, value)
        for slot, value in enumerate(node.output):
            node.output[slot] = names[value]
    graph.node.insert(
        0, helper.make_node("Transpose", ["image"], ["nchw"], perm=[0, 3, 1, 2], name="adapter")
    )
    del graph.input[:]
    graph.input.append(
        helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 224, 224, 3])
    )
    graph.output[0].name = "logits"
    del graph.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, str(target))


def torch_onnx(module: object, path: Path, shape: tuple[int, ...], dynamic: bool) -> Path:
    """A plain torch.onnx.export (TorchScript) of ``module``: how many users export."""
    import torch

    axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        torch.onnx.export(
            module, (torch.zeros(shape),), str(path), dynamo=False, opset_version=17,
            input_names=["input"], output_names=["output"], dynamic_axes=axes,
        )  # fmt: skip
    return path


@pytest.fixture(scope="module")
def mobilenet(session_for: Callable[[str], Session]) -> Session:
    return session_for("mobilenet_v2")


@pytest.fixture(scope="module")
def foreign_onnx(mobilenet: Session, tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = mobilenet.artifact(VARIANTS["ort_torchscript"]).path
    target = tmp_path_factory.mktemp("foreign") / "vendor_model.onnx"
    opaque_nhwc_onnx(source, target)
    return target


@pytest.fixture(scope="module")
def foreign_result(mobilenet: Session, foreign_onnx: Path) -> VariantResult:
    (result,) = check_external(mobilenet, foreign_onnx)
    return result


@pytest.fixture(scope="module")
def saved_model(mobilenet: Session, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """parity's Keras twin wrapped in a new NCHW model, exported as a SavedModel."""
    keras_path = mobilenet.artifact(VARIANTS["keras"]).path
    import keras

    twin = keras.models.load_model(keras_path, compile=False)
    pixels = keras.Input((3, 224, 224), name="pixels")
    model = keras.Model(pixels, twin(keras.layers.Permute((2, 3, 1), name="to_nhwc")(pixels)))
    folder = tmp_path_factory.mktemp("saved") / "vendor_saved_model"
    with contextlib.redirect_stdout(io.StringIO()):
        model.export(str(folder))
    return folder


def convert_saved_model(folder: Path, out: Path, int8_from: np.ndarray | None = None) -> Path:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(folder))
    if int8_from is not None:
        calibration = int8_from

        def dataset() -> Iterator[list[np.ndarray]]:
            for image in calibration:
                yield [image[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()):
        out.write_bytes(converter.convert())
    return out


def matches_of(result: VariantResult) -> dict[str, dict[str, str]]:
    assert result.artifact is not None
    return {m["tap"]: m for m in result.artifact.metadata["tap_matching"]}


def detected(result: VariantResult) -> str:
    assert result.artifact is not None
    return "\n".join(result.artifact.metadata["detected"])


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("parity: error:"), err
    return lines[0]


# -- (a) ONNX with opaque names and an NHWC input --------------------------------------


def test_opaque_onnx_with_nhwc_input_is_detected_matched_and_passes(
    mobilenet: Session, foreign_result: VariantResult
):
    result = foreign_result
    assert result.error is None and result.verdict is not None
    assert result.variant.name == "external_onnxruntime"
    text = detected(result)
    assert "detected: runtime onnxruntime" in text
    assert "input 'image' float32 (batch,224,224,3), layout NHWC" in text
    assert "Transpose 'adapter' right after the input, perm (0, 3, 1, 2): NHWC -> NCHW" in text
    assert "output 'logits' float32 (batch,1000)" in text
    assert "batch dimension dynamic" in text
    matches = matches_of(result)
    assert list(matches) == [t.name for t in mobilenet.taps]
    assert {m["how"] for m in matches.values()} <= HOWS
    # Located by shape and order, never by name: the names are opaque.
    assert all(m["tensor"] == "logits" or m["tensor"].startswith("t") for m in matches.values())
    assert matches["features.1"]["how"] == "shape-unique"
    assert "only tensor of shape (1,16,112,112)" in matches["features.1"]["evidence"]
    assert matches["features.2"]["how"] == "shape-order"  # features.3 has the same shape
    assert matches["stem"]["how"] == "numeric"  # conv and clip outputs share the shape
    assert "the others over 10x it" in matches["stem"]["evidence"]
    assert matches["logits"]["how"] == "final output"
    # Every tap compared, the same verdict as the built-in ONNX variant.
    assert [t.tap.name for t in result.verdict.taps] == [t.name for t in mobilenet.taps]
    assert result.passed, result.verdict.explain()
    logits = result.verdict.taps[-1].metrics
    assert logits.top1_agreement == 1.0 and logits.top5_overlap == 1.0


def test_perturbed_conv_in_opaque_onnx_fails_naming_its_tap(mobilenet: Session, tmp_path: Path):
    source = mobilenet.artifact(VARIANTS["ort_torchscript"]).path
    perturb_onnx_conv(source, tmp_path / "perturbed.onnx", module="features.5")
    broken = tmp_path / "vendor_broken.onnx"
    opaque_nhwc_onnx(tmp_path / "perturbed.onnx", broken)
    (result,) = check_external(mobilenet, broken)
    assert result.verdict is not None and not result.passed
    first = result.verdict.first_failure
    assert first is not None and first.tap.name == "features.5"
    # Taps are paired by shape and graph order, not by value: the broken one still is.
    assert matches_of(result)["features.5"]["how"] == "shape-order"
    names = [f.name for f in mobilenet.fixtures]
    assert result.verdict.explain(names).startswith("first divergent tap 'features.5'")


def test_cli_runs_the_file_alone_and_stores_detection_in_json(
    capsys: pytest.CaptureFixture[str], foreign_onnx: Path, tmp_path: Path
):
    report = tmp_path / "report.json"
    code, out, _ = run_cli(
        capsys, "run", "-q", "--summary", "--artifact", str(foreign_onnx), "--json", str(report)
    )
    assert code == 0, out
    assert "detected: input 'image'" in out and "taps: 21 of 21 compared" in out
    data = json.loads(report.read_text())
    [variant] = data["variants"]
    assert variant["name"] == "external_onnxruntime" and variant["passed"]
    assert variant["artifact"]["exporter"] == "made elsewhere"
    assert any("layout NHWC" in line for line in variant["artifact"]["detected"])
    assert len(variant["artifact"]["tap_matching"]) == 21


def test_explicit_tap_map_wins_and_a_wrong_entry_is_a_one_line_error(
    mobilenet: Session,
    foreign_onnx: Path,
    foreign_result: VariantResult,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
):
    tensors = {tap: m["tensor"] for tap, m in matches_of(foreign_result).items()}
    tap_map = tmp_path / "taps.json"
    tap_map.write_text(
        json.dumps({"taps": {
            "stem": tensors["stem"],
            "features": {"tensor": tensors["features"], "layout": "NCHW"},
        }})
    )  # fmt: skip
    result = check_artifact(foreign_onnx, session=mobilenet, tap_map=tap_map)
    matches = matches_of(result)
    assert matches["stem"]["how"] == matches["features"]["how"] == "explicit"
    assert matches["stem"]["tensor"] == tensors["stem"]
    assert result.passed
    bad = tmp_path / "bad.toml"
    bad.write_text(f'"features.3" = "{tensors["features.4"]}"\n')
    code, _, err = run_cli(
        capsys, "run", "-q", "--artifact", str(foreign_onnx), "--tap-map", str(bad)
    )
    line = one_line_error(code, err)
    assert "tap 'features.3'" in line and "reference tap is (1,24,56,56)" in line


def test_fixed_batch_of_one_and_external_data(mobilenet: Session, tmp_path: Path):
    import onnx

    model = onnx.load(str(mobilenet.artifact(VARIANTS["ort_torchscript"]).path))
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_value = 1  # a file exported with batch 1
    path = tmp_path / "batch1.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="batch1.onnx.data")
    result = check_artifact(path, session=mobilenet)
    assert "batch dimension fixed at 1: images run one at a time" in detected(result)
    assert "weights in external data batch1.onnx.data, run inlined" in detected(result)
    assert "layout NCHW" in detected(result) and "Transpose" not in detected(result)
    assert result.passed, result.verdict and result.verdict.explain()


# -- (b) TFLite converted elsewhere ----------------------------------------------------


@pytest.mark.keras
@pytest.mark.litert
def test_tflite_from_saved_model_with_nchw_permute_passes(
    mobilenet: Session, saved_model: Path, tmp_path: Path
):
    path = convert_saved_model(saved_model, tmp_path / "vendor.tflite")
    result = check_artifact(path, session=mobilenet)
    text = detected(result)
    assert "runtime litert: TFLite flatbuffer (identifier 'TFL3')" in text
    assert "input 'serving_default_pixels:0' float32 (batch,3,224,224), layout NCHW" in text
    assert "TRANSPOSE op right after the input, perm (0, 2, 3, 1): NCHW -> NHWC" in text
    matches = matches_of(result)
    assert {m["how"] for m in matches.values()} <= HOWS
    assert matches["features.3"]["layout"] == "NHWC"
    assert result.verdict is not None and result.passed, result.verdict.explain()
    assert result.verdict.taps[-1].metrics.top1_agreement == 1.0


@pytest.mark.keras
@pytest.mark.litert
def test_int8_tflite_detects_input_quantisation(
    mobilenet: Session, saved_model: Path, tmp_path: Path
):
    calibration = mobilenet.context.calibration_batch()  # NCHW, like the wrapper's input
    path = convert_saved_model(saved_model, tmp_path / "vendor_int8.tflite", calibration)
    # Held to the budgets parity's own full-int8 variants have (fixtures/tolerances.toml).
    budgets = (fixtures_dir() / "tolerances.toml").read_text()
    tolerances = tmp_path / "tolerances.toml"
    tolerances.write_text(
        budgets.replace("mobilenet_v2/litert_int8*/", "mobilenet_v2/external_litert/")
    )
    session = Session(RunConfig(model="mobilenet_v2", tolerances=tolerances))
    (result,) = check_external(session, path)
    text = detected(result)
    assert "input 'serving_default_pixels:0' int8 (batch,3,224,224), scale 0.0" in text
    assert "int8 input: the float batch is quantised with scale" in text
    assert "zero point" in text and "output 'StatefulPartitionedCall_1:0' int8" in text
    assert result.verdict is not None
    logits = result.verdict.taps[-1]
    assert logits.tap.name == "logits" and logits.metrics.top5_overlap is not None
    assert result.passed, result.verdict.explain()


@pytest.mark.keras
def test_keras_file_is_matched_by_layer_outputs(mobilenet: Session):
    result = check_artifact(mobilenet.artifact(VARIANTS["keras"]).path, session=mobilenet)
    assert "runtime keras" in detected(result) and "layout NHWC" in detected(result)
    assert result.passed, result.verdict and result.verdict.explain()


# -- (c, d) bad files: one line, exit 2 ------------------------------------------------


def test_a_text_file_is_not_a_model(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    notes = tmp_path / "notes.txt"
    notes.write_text("this is not a model\n")
    line = one_line_error(*run_cli(capsys, "run", "--artifact", str(notes))[::2])
    assert "notes.txt: not a Keras, ONNX or TFLite model" in line
    named = tmp_path / "model.onnx"
    named.write_text("this is not a model\n")
    line = one_line_error(*run_cli(capsys, "run", "--artifact", str(named))[::2])
    assert "model.onnx" in line and "not" in line


def small_classifier(classes: int = 1000) -> object:
    """A one-conv image classifier: what these checks read is the file's input and output
    shapes, which a mobilenet_v2 export gives the same (in seconds, not milliseconds)."""
    from torch import nn

    layers = [nn.Conv2d(3, 8, 3, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers, nn.Linear(8, classes)).eval()


def test_wrong_number_of_classes(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    path = torch_onnx(small_classifier(10), tmp_path / "ten.onnx", (1, 3, 224, 224), True)
    line = one_line_error(*run_cli(capsys, "run", "--artifact", str(path))[::2])
    assert "output 'output' gives 10 values per image" in line and "1000 classes" in line


def test_input_size_differs_from_the_card(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    path = torch_onnx(small_classifier(), tmp_path / "small.onnx", (1, 3, 160, 160), False)
    line = one_line_error(*run_cli(capsys, "run", "--artifact", str(path))[::2])
    assert "takes 160x160 images (NCHW)" in line and "preprocesses to 224x224" in line


def test_square_input_layout_is_not_guessed(capsys: pytest.CaptureFixture[str], tmp_path: Path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((27, 1000), np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 3, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1000])],
        [weight],
    )  # fmt: skip
    path = tmp_path / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    line = one_line_error(*run_cli(capsys, "run", "--artifact", str(path))[::2])
    assert "channel axis cannot be told" in line and "--input-layout NCHW or NHWC" in line
    # Told the layout, it goes on and finds the next problem: the size.
    code, _, err = run_cli(capsys, "run", "--artifact", str(path), "--input-layout", "NCHW")
    assert "takes 3x3 images (NCHW)" in one_line_error(code, err)


def test_artifact_options_need_an_artifact_and_agree_with_it(
    capsys: pytest.CaptureFixture[str], foreign_onnx: Path
):
    line = one_line_error(*run_cli(capsys, "run", "--input-layout", "NHWC")[::2])
    assert "need --artifact" in line
    with pytest.raises(ParityError, match="artifact-runtime litert, but the file is a ONNX"):
        check_artifact(foreign_onnx, runtime="litert")
