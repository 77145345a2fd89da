"""``parity doctor`` on what users have, from the CLI: a preprocessing module that imports
TensorFlow at the top, their own images, their model object left in training mode, their
Keras port file, their TFLite representative-dataset generator."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import parity
from parity.cli import main
from parity.doctor import OK, PROBLEM, diagnose_calibration_stats, diagnose_port
from parity.doctor.inputs import representative_batch
from parity.harness import Session

ROOT = Path(parity.__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures" / "images"

TF_PREPROCESS = """\
import tensorflow as tf  # at the top, before parity has imported torch: the segfault trap
import numpy as np

MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])

def prep(path):
    image = tf.io.decode_png(tf.io.read_file(str(path)), channels=3)
    h, w = image.shape[:2]
    size = (256, int(256 * w / h)) if h <= w else (int(256 * h / w), 256)
    image = tf.image.resize_with_crop_or_pad(tf.image.resize(image, size), 224, 224)
    return tf.transpose((image / 255.0 - MEAN) / STD, (2, 0, 1))
"""

USER_MODEL = """\
import torchvision

def build():
    return torchvision.models.mobilenet_v2(num_classes=1000)  # never .eval(): training mode
"""


def _keras_port(path: Path) -> Path:
    """A small Keras port with the classic faults: BN epsilon 1e-3, strided 'same' pooling."""
    from parity import lazy

    lazy.tensorflow()
    keras = lazy.require("keras")
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool")(x)
    keras.Model(inputs, x).save(path)
    return path


@pytest.mark.keras
def test_cli_tf_module_images_train_mode_model_and_port(tmp_path: Path) -> None:
    """One fresh process, as a user runs it: no segfault, each input diagnosed."""
    (tmp_path / "tfprep.py").write_text(TF_PREPROCESS)
    (tmp_path / "mymodel.py").write_text(USER_MODEL)
    images = tmp_path / "my_images"
    images.mkdir()
    for name in ("chelsea", "china", "flower"):
        shutil.copy(FIXTURES / f"{name}.png", images / f"{name}.png")
    port = _keras_port(tmp_path / "port.keras")
    out = tmp_path / "doctor.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    command = [
        sys.executable, "-m", "parity.cli", "doctor", "-m", "mobilenet_v2",
        "--check", "preprocessing", "--check", "batchnorm", "--check", "port_lint",
        "--preprocess", "tfprep:prep", "--images", str(images),
        "--model-object", "mymodel:build", "--port", str(port), "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    findings = {f["name"]: f for f in json.loads(out.read_text())["findings"]}
    prep = findings["preprocessing"]
    assert prep["status"] == PROBLEM and prep["evidence"]["input_form"] == "path -> array"
    assert prep["evidence"]["images"] == ["chelsea.png", "china.png", "flower.png"]
    assert sorted(prep["evidence"]["factors"]) == [
        "antialias off",
        "centre crop offset floored (TF style; torchvision rounds it)",
    ]
    assert "antialias=True" in prep["fix"]
    batchnorm = findings["batchnorm"]
    assert batchnorm["status"] == PROBLEM and "training mode" in batchnorm["cause"]
    assert batchnorm["evidence"]["batchnorm_in_train_mode"] == 52  # mobilenet_v2's
    lint = findings["port_lint"]
    assert lint["status"] == PROBLEM
    assert lint["evidence"]["maxpool_same_padding"] == ["pool (pool (3, 3) stride (2, 2))"]
    assert lint["evidence"]["bn_epsilon_mismatch"] == ["bn (epsilon 0.001)"]


@pytest.mark.keras
def test_strided_same_maxpool_differs_from_torch_and_is_linted() -> None:
    """Keras MaxPooling2D(3, 2, 'same') vs torch MaxPool2d(3, 2, padding=1): most outputs
    differ (TF pads bottom/right only); the lint names the layer, a 'valid' port is ok."""
    import torch

    from parity import lazy

    lazy.tensorflow()
    keras = lazy.require("keras")
    x = np.random.default_rng(0).standard_normal((1, 16, 16, 8)).astype(np.float32)
    same = keras.Sequential([keras.Input((16, 16, 8)), keras.layers.MaxPooling2D(3, 2, "same")])
    ported = keras.Sequential(
        [
            keras.Input((16, 16, 8)),
            keras.layers.ZeroPadding2D(1),
            keras.layers.MaxPooling2D(3, 2, "valid"),
        ]
    )
    reference = torch.nn.MaxPool2d(3, 2, padding=1)(torch.from_numpy(x.transpose(0, 3, 1, 2)))
    expected = reference.numpy().transpose(0, 2, 3, 1)
    differs = float(np.mean(np.asarray(same(x)) != expected))
    assert differs > 0.5  # measured 0.70 on this input
    assert diagnose_port(same).evidence["maxpool_same_padding"]
    assert diagnose_port(ported).status == OK  # (post-ReLU inputs: zero padding is exact)


def test_representative_generator_in_tflite_convention(session_for: object) -> None:
    session: Session = session_for("mobilenet_v2")  # type: ignore[operator]
    nhwc = session.context.calibration_batch()[:6].transpose(0, 2, 3, 1)

    def representative_dataset():  # TFLite's own convention: yield a list of inputs
        for sample in nhwc:
            yield [sample[None]]

    batch = representative_batch(representative_dataset)
    assert batch.shape == (6, 3, 224, 224)
    np.testing.assert_array_equal(batch, nhwc.transpose(0, 3, 1, 2))
    spec = session.card.preprocess
    assert diagnose_calibration_stats(batch, session.batch, spec).status == OK

    def noise_dataset():
        rng = np.random.default_rng(0)
        for _ in range(4):
            yield {"image": rng.standard_normal((1, 224, 224, 3), dtype=np.float32)}

    noisy = diagnose_calibration_stats(representative_batch(noise_dataset), session.batch, spec)
    assert noisy.status == PROBLEM and "noise" in noisy.cause


def test_cli_bad_inputs_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "gen.py").write_text("def nothing():\n    return iter(())\n")
    bad = [
        ["--images", str(tmp_path / "empty"), "--check", "batchnorm"],
        ["--port", str(tmp_path / "missing.keras"), "--check", "port_lint"],
        ["--calibration", str(tmp_path / "none.npy"), "--check", "calibration"],
        ["--model-object", "no_such_module:build", "--check", "batchnorm"],
        ["--representative", "gen:nothing", "--check", "calibration"],
    ]
    sys.path.insert(0, str(tmp_path))
    try:
        for options in bad:
            assert main(["doctor", "-m", "mobilenet_v2", *options]) == 2, options
            err = capsys.readouterr().err.strip()
            assert err.startswith("parity: error:") and "Traceback" not in err, err
    finally:
        sys.path.remove(str(tmp_path))


def test_port_lint_onnx_file(tmp_path: Path) -> None:
    """A hand-built ONNX graph with TF-style padding; a clean one passes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from parity.doctor.port_files import lint_port_file

    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")

    def save(name: str, nodes: list[onnx.NodeProto]) -> Path:
        graph = helper.make_graph(
            nodes,
            name,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [weight],
        )
        path = tmp_path / f"{name}.onnx"
        onnx.save(helper.make_model(graph), str(path))
        return path

    conv = helper.make_node(
        "Conv", ["x", "w"], ["c"], "conv", strides=[2, 2], auto_pad="SAME_UPPER"
    )
    pool = helper.make_node("AveragePool", ["c"], ["y"], "pool", kernel_shape=[3, 3], pads=[1] * 4)
    faulty = save("faulty", [conv, pool])
    finding = lint_port_file(faulty)
    assert finding.status == PROBLEM
    assert finding.evidence["stride2_same_padding"] == ["conv (Conv)"]
    assert finding.evidence["avgpool_excludes_padding"] == ["pool (AveragePool)"]
    clean = save(
        "clean",
        [helper.make_node("Conv", ["x", "w"], ["y"], "conv", strides=[2, 2], pads=[1, 1, 1, 1])],
    )
    assert lint_port_file(clean).status == OK


@pytest.mark.keras
def test_port_lint_tflite_file(tmp_path: Path) -> None:
    """A Keras port with a strided 'same' conv, converted to TFLite: the op is named."""
    from parity import lazy
    from parity.doctor.port_files import lint_port_file
    from parity.export.tflite import convert_keras_model

    lazy.tensorflow()
    keras = lazy.require("keras")
    inputs = keras.Input((16, 16, 3))
    outputs = keras.layers.Conv2D(4, 3, strides=2, padding="same")(inputs)
    path = tmp_path / "port.tflite"
    path.write_bytes(convert_keras_model(keras.Model(inputs, outputs), "fp32"))
    finding = lint_port_file(path)
    assert finding.status == PROBLEM, finding.cause
    assert [op.split(" ")[-1] for op in finding.evidence["stride2_same_padding"]] == ["(CONV_2D)"]


@pytest.mark.litert
@pytest.mark.heavy  # an int8 conversion; the generator's convention is tested by default
def test_cli_calibration_from_a_representative_generator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--representative mod:fn`` in TFLite's convention drives the int8 calibration check."""
    (tmp_path / "userdata.py").write_text(
        "import numpy as np\n"
        "def representative_dataset():\n"
        "    rng = np.random.default_rng(0)\n"
        "    for _ in range(8):\n"
        "        yield [rng.uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)]\n"
    )
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "doctor.json"
    code = main(
        ["doctor", "-m", "resnet18", "--check", "calibration", "--representative",
         "userdata:representative_dataset", "--json", str(out)]
    )  # fmt: skip
    assert code == 1
    (finding,) = json.loads(out.read_text())["findings"]
    assert finding["evidence"]["calibration"] == "user batch"
    assert finding["evidence"]["stats_calibration"]["images"] == 8
    assert "outside the range" in finding["cause"]  # raw 0-255 pixels, not preprocessed
