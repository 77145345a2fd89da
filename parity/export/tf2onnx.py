"""Keras twin -> ONNX with tf2onnx, and where each tap lives in the converted graph.

The ``tf2onnx`` artifact converts the cached ``keras`` artifact (not the torch model):
it is what a team shipping a Keras model to ONNX Runtime would run. Measured facts about
tf2onnx 1.17 on these twins (keras 3.15, TF 2.21), which the tap rule below is built on:

* Names keep the Keras scope: node ``resnet_1/layer2.1.relu_1/Relu``, value
  ``mobilenet_v2_1/features.3_1/Add:0`` -- model scope, then the layer name plus TF's
  ``_<n>`` uniquifying suffix. The graph input is ``input`` (NHWC), the output is named
  after the last Dense layer. Intermediates are NCHW: tf2onnx transposes the input once
  and keeps the whole body channels-first.
* BatchNorm after a regular conv is folded into it, and the fused node gets a made-up
  name (``Conv__351``): a conv or BN layer not followed by an activation has no node of
  its own name. Its initializers keep their scopes: the weight is
  ``<model>/<conv>_1/convolution/merged_input:0``, the bias ``<model>/<bn>_1/batchnorm/sub:0``.
* Trap 1: the NHWC->NCHW Transpose of the input is named after the first BatchNorm
  (``…/bn1_1/batchnorm/mul_1__6``): nodes tf2onnx makes up carry a ``__<n>`` suffix and
  borrow a neighbour's name.
* Trap 2: ``fc_1/MatMul`` is the Dense output *before* the bias add (``fc_1/BiasAdd``);
  with an all-zero bias the Add is dropped and the MatMul writes the graph output.

Tap rule (:func:`locate_tap_values`). A node belongs to Keras layer ``L`` if

1. its name's layer segment (the one after the model scope) is ``L`` (``L_<n>``), unless
   the name ends in ``__<n>`` (made up by tf2onnx; trap 1), or
2. it is such a made-up node and one of its constant inputs, used by no other node, has
   ``L`` as its layer segment (the fused ``Conv__351`` belongs to its conv *and* its BN), or
3. it writes a graph output named ``L``.

The tap value of ``L`` is the one value that a node of ``L`` produces and that a node
outside ``L`` consumes or the graph returns (so ``MatMul`` -> ``BiasAdd`` stays inside
``fc``: trap 2). No value or several is a :class:`~parity.errors.TapError` naming the
tap. Each located value's shape is then checked against the Keras layer's output shape
to find the layout of the taps (NCHW), never assumed. Values computed from tensor shapes
only (``Shape`` and what follows from it: a Reshape's target shape) are never tap values:
depending on the order tf2onnx rewrites the graph in, ``flatten``'s batch size stays a
``Shape -> Slice -> Concat`` path whose slice is consumed by a node tf2onnx made up. The
conversion itself is pinned (:mod:`parity.export.tf2onnx_convert`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parity import lazy
from parity.errors import ArtifactError, RuntimeFailure, TapError
from parity.export.tf2onnx_convert import OPSET, convert

__all__ = [
    "OPSET",
    "export_tf2onnx",
    "layer_of",
    "locate_tap_values",
    "node_layers",
    "shape_values",
    "tap_layout",
]

if TYPE_CHECKING:
    from parity.artifacts import BuildContext

_MADE_UP = re.compile(r"__\d+$")  # tf2onnx's names for nodes it creates or renames
_OUTPUT_INDEX = re.compile(r":\d+$")


def layer_of(name: str, layers: frozenset[str]) -> str | None:
    """Keras layer whose scope ``name`` (a node or value name) lies in, or None.

    ``mobilenet_v2_1/features.3.conv.0.2_1/Relu6:0`` -> ``features.3.conv.0.2``: the
    second ``/`` segment is the layer's, with TF's ``_<n>`` suffix; the first is the
    model's.
    """
    parts = _OUTPUT_INDEX.sub("", name).split("/")
    if len(parts) < 2:
        return None
    segment = parts[1]
    if segment in layers:
        return segment
    base, sep, suffix = segment.rpartition("_")
    if sep and suffix.isdigit() and base in layers:
        return base
    return None


def node_layers(model: Any, layers: Iterable[str]) -> list[set[str]]:
    """For every node of ``model`` (in graph order), the Keras layers it belongs to."""
    known = frozenset(layers)
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            constants.update(node.output)
    uses: dict[str, int] = {}
    for node in graph.node:
        for value in node.input:
            uses[value] = uses.get(value, 0) + 1
    outputs = {o.name for o in graph.output}
    owners: list[set[str]] = []
    for node in graph.node:
        owner: set[str] = set()
        if not _MADE_UP.search(node.name):
            layer = layer_of(node.name, known)
            if layer is not None:
                owner.add(layer)
        else:
            for value in node.input:
                if value in constants and uses.get(value) == 1:
                    layer = layer_of(value, known)
                    if layer is not None:
                        owner.add(layer)
        owner.update(v for v in node.output if v in outputs and v in known)
        owners.append(owner)
    return owners


def shape_values(model: Any) -> set[str]:
    """Values computed from tensor shapes alone: a ``Shape`` node's output, and the outputs of
    nodes whose every input is such a value or a constant (graph order is topological)."""
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    found: set[str] = set()
    for node in graph.node:
        computed = [v for v in node.input if v and v not in constants]
        if node.op_type == "Constant":
            constants.update(node.output)
        elif node.op_type == "Shape" or (computed and all(v in found for v in computed)):
            found.update(node.output)
    return found


def locate_tap_values(
    model: Any, tap_layers: Mapping[str, str], layers: Iterable[str]
) -> dict[str, str]:
    """Tap name -> ONNX value name, from the Keras artifact's tap -> layer map."""
    graph = model.graph
    owners = node_layers(model, layers)
    outputs = {o.name for o in graph.output}
    shapes = shape_values(model)
    located = {}
    for tap, layer in tap_layers.items():
        inside = [i for i, owner in enumerate(owners) if layer in owner]
        if not inside:
            raise TapError(f"tap '{tap}': no node of Keras layer '{layer}' in the tf2onnx graph")
        produced = [v for i in inside for v in graph.node[i].output if v not in shapes]
        used_outside = {
            v for i, node in enumerate(graph.node) if layer not in owners[i] for v in node.input
        }
        candidates = [v for v in produced if v in used_outside or v in outputs]
        if len(candidates) != 1:
            raise TapError(
                f"tap '{tap}': Keras layer '{layer}' has {len(candidates)} output values in "
                f"the tf2onnx graph ({candidates[:4]}); expected exactly one"
            )
        located[tap] = candidates[0]
    return located


def _value_shapes(model: Any) -> dict[str, tuple[int | None, ...]]:
    """Shapes of every value ONNX shape inference knows (``None`` for symbolic dims)."""
    onnx = lazy.require("onnx")
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    shapes = {}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        tensor = info.type.tensor_type
        if tensor.HasField("shape"):
            shapes[info.name] = tuple(
                d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim
            )
    return shapes


def tap_layout(
    model: Any, tap_values: Mapping[str, str], keras_shapes: Mapping[str, Sequence[int | None]]
) -> str:
    """The layout of the 4-D taps ("NCHW" or "NHWC"), checked tap by tap.

    ``keras_shapes`` is tap -> the Keras layer's output shape (NHWC, batch first).
    Every tap must have the Keras shape, or for 4-D taps its NCHW transpose; all 4-D
    taps must agree. Otherwise a :class:`TapError` names the tap.
    """
    shapes = _value_shapes(model)
    layout = None
    for tap, value in tap_values.items():
        expected = tuple(keras_shapes[tap])[1:]
        got = shapes.get(value)
        if got is None or None in got[1:]:
            raise TapError(f"tap '{tap}': no static shape for ONNX value '{value}'")
        readings = set()
        if len(expected) == 3:
            h, w, c = expected
            if got[1:] == (c, h, w):
                readings.add("NCHW")
            if got[1:] == (h, w, c):
                readings.add("NHWC")
        elif got[1:] == expected:
            continue
        if not readings or (layout is not None and layout not in readings):
            raise TapError(
                f"tap '{tap}': ONNX value '{value}' has shape {got}, the Keras layer "
                f"{(None, *expected)}" + (f" (other taps are {layout})" if layout else "")
            )
        if len(readings) == 1:
            layout = readings.pop()
    return layout or "NCHW"


def export_tf2onnx(ctx: BuildContext, out: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """Convert the cached Keras artifact to ``out``; metadata carries the ORT tap map.

    A conversion, or a tap location on the converted graph, that fails is a
    :class:`RuntimeFailure` (the variant fails with the message), not bad input.
    """
    keras_artifact = ctx.artifact("keras")
    lazy.tensorflow()
    keras = lazy.require("keras")
    onnx = lazy.require("onnx")
    try:
        model = keras.models.load_model(keras_artifact.path, compile=False)
    except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors, ...
        raise ArtifactError(
            f"{keras_artifact.path}: Keras cannot load it ({type(exc).__name__}: {exc})"
        ) from None
    opset = int(options.get("opset", OPSET))
    proto = convert(model, keras_artifact.path, out, opset)
    (graph_input,) = proto.graph.input
    dims = [d.dim_value or None for d in graph_input.type.tensor_type.shape.dim]
    tap_layers = keras_artifact.metadata["runner_options"]["tap_layers"]
    layers = [layer.name for layer in model.layers]
    keras_shapes = {
        tap: tuple(model.get_layer(layer).output.shape) for tap, layer in tap_layers.items()
    }
    try:
        onnx.checker.check_model(proto, full_check=True)
        if dims[1:] != list(model.input_shape[1:]):  # NHWC, as the Keras model takes it
            raise TapError(
                f"tf2onnx input '{graph_input.name}' has shape {dims}, "
                f"expected NHWC {list(model.input_shape)}"
            )
        tap_values = locate_tap_values(proto, tap_layers, layers)
        layout = tap_layout(proto, tap_values, keras_shapes)
    except (TapError, onnx.checker.ValidationError) as exc:
        raise RuntimeFailure(f"tf2onnx's graph: {exc}") from exc
    return {
        "exporter": "tf2onnx.convert.from_keras",
        "opset": opset,
        "nodes": len(proto.graph.node),
        "source_keras_key": keras_artifact.key,
        "runner_options": {
            "input_layout": "NHWC",
            "tap_layout": layout,
            "tap_values": tap_values,
        },
    }
