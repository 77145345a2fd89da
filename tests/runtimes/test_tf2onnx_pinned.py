"""tf2onnx conversions are pinned: the same Keras file gives the same graph, names included.

The trigger of the one conversion that "came out different under load" was Python's string
hash seed (tf2onnx rewrites the graph in set order, :mod:`parity.export.tf2onnx`): with
``PYTHONHASHSEED=2`` flatten's batch size stays a ``Shape -> Slice -> Concat`` path. These
tests convert the real mobilenet_v2 twin in fresh processes under different seeds, under
CPU contention, and after other models were built and converted in the same process, and
compare a hash of the graph's structure; and they give the tap rule that shape path.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_tf2onnx import keras_layer_names

from parity.cli import main
from parity.errors import RuntimeFailure
from parity.export.tf2onnx import layer_of, locate_tap_values, shape_values
from parity.export.tf2onnx_convert import convert_in_child
from parity.harness import Session
from parity.variants import VARIANTS

pytestmark = [pytest.mark.torch, pytest.mark.keras, pytest.mark.onnxruntime]


def graph_digest(model: Any) -> str:
    """sha256 of the graph's structure: every node's op, name, inputs, outputs and
    attributes in order, and the initializers' names and bytes."""
    digest = hashlib.sha256()
    for node in model.graph.node:
        digest.update(node.SerializeToString(deterministic=True))
    for init in model.graph.initializer:
        digest.update(init.name.encode() + init.raw_data)
    return digest.hexdigest()


def with_unfolded_flatten(model: Any, layers: list[str]) -> Any:
    """A copy of ``model`` whose flatten Reshape takes its target shape from a
    ``Shape -> Slice -> Concat`` path, as tf2onnx leaves it under some hash seeds (measured:
    the Slice is named after flatten's ``strided_slice``, the Concat is made up)."""
    import onnx
    from onnx import helper, numpy_helper

    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    graph = broken.graph
    (reshape,) = [
        n for n in graph.node if n.op_type == "Reshape" and layer_of(n.name, frozenset(layers))
    ]
    scope = reshape.name.rsplit("/", 1)[0]
    data = reshape.input[0]
    for name, value in [("shape_starts__9001", [0]), ("shape_ends__9002", [1])]:
        graph.initializer.append(numpy_helper.from_array(np.array(value, np.int64), name))
    width = numpy_helper.from_array(np.array([-1], np.int64), "shape_width__9003")
    graph.initializer.append(width)
    nodes = [
        helper.make_node("Shape", [data], [f"{scope}/Shape:0"], name="Shape__9004"),
        helper.make_node(
            "Slice",
            [f"{scope}/Shape:0", "shape_starts__9001", "shape_ends__9002"],
            [f"{scope}/strided_slice:0"],
            name=f"{scope}/strided_slice",
        ),
        helper.make_node(
            "Concat",
            [f"{scope}/strided_slice:0", "shape_width__9003"],
            [f"{scope}/Reshape/shape_Concat__9005:0"],
            name=f"{scope}/Reshape/shape_Concat__9005",
            axis=0,
        ),
    ]
    position = list(graph.node).index(reshape)
    for offset, node in enumerate(nodes):
        graph.node.insert(position + offset, node)
    reshape.input[1] = f"{scope}/Reshape/shape_Concat__9005:0"
    onnx.checker.check_model(broken, full_check=True)
    return broken


VARIANT = VARIANTS["ort_tf2onnx"]

#: Run in a fresh process: build and convert another model named like the twin (argv[4]
#: "other"), load the twin's file twice (a same-named model already built), then convert
#: it; print the digest.
AFTER_OTHER_MODELS = """
import sys
from pathlib import Path
from parity import lazy
lazy.ISOLATED = True
lazy.tensorflow()
import keras
from parity.export.tf2onnx_convert import convert
sys.path.insert(0, sys.argv[3])
from test_tf2onnx_pinned import graph_digest
if sys.argv[4] == "other":
    x = keras.Input((32, 32, 3), name="input")
    y = keras.layers.Conv2D(8, 3, name="features.0.0")(x)
    y = keras.layers.GlobalAveragePooling2D(keepdims=True, name="adaptive_avg_pool2d")(y)
    y = keras.layers.Dense(4, name="classifier.1")(keras.layers.Flatten(name="flatten")(y))
    other = keras.Model(x, y, name="mobilenet_v2")
    other.save(sys.argv[2] + ".other.keras")
    convert(other, Path(sys.argv[2] + ".other.keras"), Path(sys.argv[2] + ".other"))
keras.models.load_model(sys.argv[1], compile=False)
model = keras.models.load_model(sys.argv[1], compile=False)
print(graph_digest(convert(model, Path(sys.argv[1]), Path(sys.argv[2]))))
"""


def busy_loops(count: int, seconds: float) -> list[subprocess.Popen[bytes]]:
    """``count`` processes spinning a core each, for at most ``seconds``."""
    spin = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    return [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(count)]


def converted_elsewhere(
    keras_path: Path, out: Path, seed: str, loops: int = 0, other: bool = True
) -> subprocess.CompletedProcess[str]:
    """:data:`AFTER_OTHER_MODELS` in a fresh Python with ``PYTHONHASHSEED=seed``, beside
    ``loops`` busy loops (stopped when it ends); ``other``: another model converted first."""
    env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=os.pathsep.join(sys.path))
    command = [sys.executable, "-c", AFTER_OTHER_MODELS, str(keras_path), str(out)]
    spinning = busy_loops(loops, 600)
    try:
        return subprocess.run(
            [*command, str(Path(__file__).parent), "other" if other else "-"],
            env=env, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
    finally:
        for loop in spinning:
            loop.kill()
            loop.wait()


def cached(session: Session) -> tuple[Any, Path]:
    """The cached tf2onnx graph of the session's model and the Keras file it came from."""
    import onnx

    return onnx.load(str(session.artifact(VARIANT).path)), session.artifact(VARIANTS["keras"]).path


@pytest.mark.heavy
def test_same_graph_after_other_models_under_cpu_contention(
    session_for: Callable[[str], Session], tmp_path: Path
):
    """The cached conversion (this process, hash randomised: converted in a pinned child)
    and one in a busy process that built and converted a same-named model first agree."""
    proto, keras_path = cached(session_for("mobilenet_v2"))
    run = converted_elsewhere(keras_path, tmp_path / "model.onnx", "0", loops=2)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-1] == graph_digest(proto)


@pytest.mark.parametrize("seed", ["2", pytest.param("random", marks=pytest.mark.heavy)])
def test_same_graph_whatever_the_callers_hash_seed(
    session_for: Callable[[str], Session], tmp_path: Path, seed: str
):
    """Seed 2 left flatten's shape path unfolded before the pin; a caller's seed no longer
    matters: its process converts in a pinned child (each conversion in its own, so a model
    converted before it is the contention test's case, heavy)."""
    proto, keras_path = cached(session_for("mobilenet_v2"))
    run = converted_elsewhere(keras_path, tmp_path / f"model.{seed}.onnx", seed, other=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-1] == graph_digest(proto), seed


def keras_layers(session: Session) -> tuple[dict[str, str], list[str]]:
    """The Keras artifact's tap -> layer map and every layer name."""
    artifact = session.artifact(VARIANTS["keras"])
    return artifact.metadata["runner_options"]["tap_layers"], keras_layer_names(artifact.path)


def test_tap_rule_takes_the_data_value_not_the_shape_path(session_for: Callable[[str], Session]):
    """flatten with an unfolded shape path: its Slice is consumed by a made-up node outside
    the layer, yet 'pooled' is still the Reshape's output, and the graph computes the same."""
    import onnxruntime as ort

    session = session_for("mobilenet_v2")
    proto, _ = cached(session)
    tap_layers, layers = keras_layers(session)
    unfolded = with_unfolded_flatten(proto, layers)
    slice_value = "mobilenet_v2_1/flatten_1/strided_slice:0"
    assert slice_value in shape_values(unfolded)
    assert slice_value not in shape_values(proto)
    located = locate_tap_values(unfolded, tap_layers, layers)
    assert located == locate_tap_values(proto, tap_layers, layers)
    assert located["pooled"] == "mobilenet_v2_1/flatten_1/Reshape:0"
    image = session.batch[:1].transpose(0, 2, 3, 1)
    outputs = [
        ort.InferenceSession(m.SerializeToString()).run(None, {"input": image})[0]
        for m in (proto, unfolded)
    ]
    np.testing.assert_array_equal(outputs[0], outputs[1])


def test_a_tap_tf2onnx_leaves_no_node_for_is_a_failed_variant_with_reports(
    session_for: Callable[[str], Session],
    parity_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    """Through the CLI's main (its workers convert): the cached Keras artifact's tap map
    says 'stem' is the input layer (a fault injected into its metadata), which a fresh
    tf2onnx graph has no node for. The variant fails with the converter-side message,
    reports are written, exit 1 (it was exit 2, bad input, with no report)."""
    session = session_for("mobilenet_v2")
    keras_artifact = session.artifact(VARIANTS["keras"])
    _ = session.reference
    cache = tmp_path / "cache"
    model_dir = cache / "artifacts" / "mobilenet_v2"
    model_dir.mkdir(parents=True)
    for folder in ("weights", "reference"):
        (cache / folder).symlink_to(parity_cache / folder)
    broken = model_dir / keras_artifact.path.parent.name
    shutil.copytree(keras_artifact.path.parent, broken)
    meta = json.loads((broken / "meta.json").read_text())
    meta["runner_options"]["tap_layers"]["stem"] = "input"
    (broken / "meta.json").write_text(json.dumps(meta))
    report = tmp_path / "report.json"
    monkeypatch.setenv("PARITY_CACHE_DIR", str(cache))
    command = ["run", "-q", "--summary", "-m", "mobilenet_v2", "-r", "ort_tf2onnx"]
    code = main([*command, "-r", "ort_torchscript", "--json", str(report)])
    out, err = capsys.readouterr()
    assert code == 1, out + err
    assert "Traceback" not in out + err
    variants = {v["name"]: v for v in json.loads(report.read_text())["variants"]}
    assert variants["ort_torchscript"]["status"] == "pass"
    failed = variants["ort_tf2onnx"]
    assert failed["status"] == "error"
    assert "its artifact could not be made: tf2onnx's graph: tap 'stem': no node of Keras " \
        "layer 'input'" in failed["error"], failed  # fmt: skip
    assert not list(model_dir.glob("tf2onnx-*/model.onnx"))  # nothing cached


def test_a_converter_error_is_a_runtime_failure_not_bad_input(tmp_path: Path):
    """The pinned child's error (here: it cannot load the file) is a failed variant."""
    not_keras = tmp_path / "model.keras"
    not_keras.write_text("not a Keras file")
    with pytest.raises(RuntimeFailure, match=r"Keras could not load .*model.keras: ValueError"):
        convert_in_child(not_keras, tmp_path / "model.onnx")
