"""LiteRT runner (``ai_edge_litert`` Interpreter, NHWC): taps from fused TFLite tensor names.

The TFLite converter names each op's output after the Keras ops it fused, ``;``-joined,
the last Keras layer of the group first::

    mobilenet_v2_1/features.3.conv.0.2_1/Relu6;mobilenet_v2_1/features.3.conv.0.1_1/...

A tap's Keras layer (``tap_layers``, recorded by the Keras exporter) is found by the
reverse rule: among the tensors computed at run time (outputs of ops that read at least
one non-constant tensor: folded weights and biases, and the DEQUANTIZE ops that expand
fp16 weights, carry the same names), take the first ``;``-segment, its second
``/``-part, strip TF's ``_<n>`` scope suffix; that is the Keras layer. The layer's output
is its one tensor read by an op of another layer (or returned by the model). The
converter renames the model output (``StatefulPartitionedCall_1:0``), so the tap of
``output_layer`` is the output tensor from the output details. A layer with no tensor
(fused into a later op) or several is a :class:`~parity.errors.TapError`, never a skip.

Extra ops of quantised files never shadow a tap: a full-int8 file with float I/O adds a
QUANTIZE after the input (``tfl.quantize``) and a DEQUANTIZE after the int8 classifier
(whose own output becomes ``StatefulPartitionedCall_1:01``); neither name carries a layer,
and the tap of ``output_layer`` reads the float output. An ``int8_io`` file has neither:
the runner quantises the float input with the input's scale and zero point (as the
QUANTIZE op would: the taps come out bitwise equal) and dequantises the output. Integer
tap tensors are dequantised with their own parameters, so every tensor comes back float32.
"""

from __future__ import annotations

import re
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity import lazy
from parity.backends.litert.internals import ops_details
from parity.errors import ArtifactError, TapError, runtime_failure
from parity.preprocess import Layout
from parity.runner import OUTPUT, Runner
from parity.taps import Tap

_SCOPE_SUFFIX = re.compile(r"_\d+$")
#: Images per invoke. A tapped interpreter holds every tensor of the graph for the whole
#: invoke (mobilenet_v2, 16 images at once: 1.2-2.0 GB); 4 at a time gives the same
#: values to the bit, a quarter of the memory, and no slower (bench/workers.md).
IMAGES_PER_INVOKE = 4


def keras_layer_of(tensor_name: str) -> str | None:
    """The Keras layer a TFLite tensor name belongs to (None for names without a scope)."""
    parts = tensor_name.split(";", 1)[0].split("/")
    if len(parts) < 3:  # "serving_default_input:0", "tfl.quantize", renamed outputs
        return None
    return _SCOPE_SUFFIX.sub("", parts[1])


def dequantize(value: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    """An integer tensor back to float32 with its (per-tensor or per-axis) parameters."""
    if not np.issubdtype(value.dtype, np.integer):
        return value.astype(np.float32, copy=False)
    params = detail["quantization_parameters"]
    scales, zero_points = params["scales"], params["zero_points"]
    if len(scales) == 0:
        raise TapError(f"integer tensor '{detail['name']}' has no quantisation parameters")
    if len(scales) > 1:  # per-axis: broadcast along the quantised dimension
        shape = [1] * value.ndim
        shape[params["quantized_dimension"]] = len(scales)
        scales, zero_points = scales.reshape(shape), zero_points.reshape(shape)
    else:
        scales, zero_points = scales[0], zero_points[0]
    return ((value.astype(np.float32) - zero_points) * scales).astype(np.float32)


def quantize(value: np.ndarray, detail: Mapping[str, Any]) -> np.ndarray:
    """A float input to the input tensor's integer type, as TFLite's QUANTIZE op does it.

    ``clamp(round(x / scale) + zero_point)``, rounding half away from zero (TfLiteRound).
    """
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail["quantization"]
    if scale == 0:
        raise ArtifactError(f"integer input '{detail['name']}' has no quantisation scale")
    scaled = value.astype(np.float32) / np.float32(scale)
    rounded = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    info = np.iinfo(dtype)
    return np.clip(rounded + zero_point, info.min, info.max).astype(dtype)


class LiteRTRunner(Runner):
    """Runs a ``.tflite`` file with the LiteRT interpreter on the CPU.

    Args:
        name: variant name.
        path: the ``.tflite`` file.
        tap_layers: tap name -> Keras layer whose output is the tap.
        threads: interpreter threads.
        xnnpack: apply the default XNNPACK delegate (False: builtin kernels only).
        output_layer: the Keras layer whose output is the model output (renamed by the
            converter); a tap mapped to it reads the output tensor.

    Runs without taps use a plain interpreter; the first tapped run builds a second one
    with ``experimental_preserve_all_tensors`` (XNNPACK then delegates op by op, so each
    intermediate tensor is materialised; outputs are bitwise those of the plain one). The
    batch runs :data:`IMAGES_PER_INVOKE` images per invoke, the input resized to that
    (measured: same values as image by image or all at once, and 1.1-6x faster than image
    by image without XNNPACK); a file whose input has a static batch runs that many.
    """

    input_layout: Layout = "NHWC"
    tap_layout: Layout = "NHWC"

    def __init__(
        self,
        name: str,
        path: Path | str,
        tap_layers: Mapping[str, str] | None = None,
        threads: int = 2,
        xnnpack: bool = True,
        output_layer: str | None = None,
    ) -> None:
        super().__init__(name)
        self.path = Path(path)
        self.tap_layers = dict(tap_layers or {})
        self.threads = threads
        self.xnnpack = xnnpack
        self.output_layer = output_layer
        self._interpreters: dict[bool, Any] = {}
        self._batch_sizes: dict[bool, int] = {}
        self._layer_tensors: dict[str, list[int]] | None = None
        self._details: dict[int, dict[str, Any]] = {}

    # -- lifecycle -------------------------------------------------------------------

    def _new_interpreter(self, preserve: bool) -> Any:
        module = self._module
        options: dict[str, Any] = {"num_threads": self.threads}
        if not self.xnnpack:
            options["experimental_op_resolver_type"] = (
                module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            )
        if preserve:
            options["experimental_preserve_all_tensors"] = True
        with runtime_failure(f"{self.path}: LiteRT cannot load it"), warnings.catch_warnings():
            # "preserve_all_tensors is for debugging": it is
            warnings.filterwarnings("ignore", ".*experimental_preserve_all_tensors")
            return module.Interpreter(model_path=str(self.path), **options)

    def _activate(self) -> None:
        if not self.path.is_file():
            raise ArtifactError(f"{self.path}: TFLite file not found")
        self._module = lazy.require("ai_edge_litert.interpreter")
        self._interpreters = {False: self._new_interpreter(preserve=False)}
        self._batch_sizes = {}
        self._layer_tensors = None
        self._details = {}

    def _deactivate(self) -> None:
        self._interpreters.clear()
        self._batch_sizes.clear()

    def _interpreter(self, preserve: bool) -> Any:
        if preserve not in self._interpreters:
            self._interpreters[preserve] = self._new_interpreter(preserve)
        return self._interpreters[preserve]

    # -- taps ------------------------------------------------------------------------

    def _index_layers(self, interpreter: Any) -> dict[str, list[int]]:
        """Keras layer -> indices of its tensors that ops of other layers read."""
        ops = ops_details(interpreter)
        graph_inputs = {d["index"] for d in interpreter.get_input_details()}
        graph_outputs = {d["index"] for d in interpreter.get_output_details()}
        produced = {int(t) for op in ops for t in op["outputs"]}
        names = {d["index"]: d["name"] for d in interpreter.get_tensor_details()}
        constant = {t for t in names if t not in produced and t not in graph_inputs}
        layer_of: dict[int, str | None] = {}
        readers: dict[int, list[str | None]] = defaultdict(list)
        for op in ops:  # ops are in execution order
            inputs = [int(t) for t in op["inputs"] if t >= 0]
            outputs = [int(t) for t in op["outputs"] if t >= 0]
            if inputs and all(t in constant for t in inputs):  # weight preparation
                constant.update(outputs)
                continue
            op_layer = keras_layer_of(names.get(outputs[0], "")) if outputs else None
            for t in outputs:
                layer_of[t] = keras_layer_of(names.get(t, ""))
            for t in inputs:
                readers[t].append(op_layer)
        located: dict[str, list[int]] = defaultdict(list)
        for tensor, layer in layer_of.items():
            if layer is None:
                continue
            if tensor in graph_outputs or any(r != layer for r in readers[tensor]):
                located[layer].append(tensor)
        return dict(located)

    def _tap_tensors(self, interpreter: Any, taps: Sequence[Tap]) -> dict[str, int]:
        """Tap name -> tensor index in the tapped interpreter."""
        if self._layer_tensors is None:
            self._layer_tensors = self._index_layers(interpreter)
            self._details = {d["index"]: d for d in interpreter.get_tensor_details()}
        output_index = interpreter.get_output_details()[0]["index"]
        located = {}
        for tap in taps:
            if tap.name not in self.tap_layers:
                raise TapError(f"{self.name}: no Keras layer is mapped to tap '{tap.name}'")
            layer = self.tap_layers[tap.name]
            if layer == self.output_layer:
                located[tap.name] = output_index
                continue
            tensors = self._layer_tensors.get(layer, [])
            if len(tensors) != 1:
                what = "no tensor" if not tensors else f"{len(tensors)} output tensors"
                hint = (
                    " (fused into another op by the converter, or the renamed model output"
                    " without output_layer?)"
                    if not tensors
                    else ""
                )
                raise TapError(
                    f"{self.name}: tap '{tap.name}': Keras layer '{layer}' has {what} in "
                    f"{self.path.name}{hint}; expected exactly one"
                )
            located[tap.name] = tensors[0]
        return located

    def tap_details(self, taps: Sequence[Tap]) -> dict[str, dict[str, Any]]:
        """Tap name -> LiteRT details of its tensor (name, dtype, quantisation)."""
        if not self.active:
            raise RuntimeError(f"runner {self.name} is not active; use 'with runner:'")
        located = self._tap_tensors(self._interpreter(True), taps)
        return {name: self._details[index] for name, index in located.items()}

    # -- run -------------------------------------------------------------------------

    def _prepare(self, preserve: bool, batch_size: int) -> Any:
        """The interpreter, its input resized to ``batch_size`` and allocated."""
        interpreter = self._interpreter(preserve)
        if self._batch_sizes.get(preserve) != batch_size:
            detail = interpreter.get_input_details()[0]
            shape = [batch_size, *(int(d) for d in detail["shape"][1:])]
            with runtime_failure(f"{self.path}: LiteRT cannot allocate a batch of {batch_size}"):
                interpreter.resize_tensor_input(detail["index"], shape, strict=True)
                interpreter.allocate_tensors()
            self._batch_sizes[preserve] = batch_size
        return interpreter

    def _run(self, feed: np.ndarray, taps: Sequence[Tap]) -> dict[str, np.ndarray]:
        preserve = bool(taps)
        interpreter = self._interpreter(preserve)
        located = self._tap_tensors(interpreter, taps) if taps else {}
        self.located = {tap: str(self._details[index]["name"]) for tap, index in located.items()}
        fixed = int(interpreter.get_input_details()[0]["shape_signature"][0])
        step = fixed if fixed > 0 else IMAGES_PER_INVOKE  # a static batch: that many at a time
        if len(feed) <= step:
            return self._invoke(preserve, feed, located)
        parts = [
            self._invoke(preserve, feed[i : i + step], located) for i in range(0, len(feed), step)
        ]
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    def _invoke(
        self, preserve: bool, feed: np.ndarray, located: Mapping[str, int]
    ) -> dict[str, np.ndarray]:
        interpreter = self._prepare(preserve, len(feed))
        input_detail = interpreter.get_input_details()[0]
        if np.issubdtype(np.dtype(input_detail["dtype"]), np.integer):
            feed = quantize(feed, input_detail)
        with runtime_failure(f"{self.path}: LiteRT failed running it"):
            interpreter.set_tensor(input_detail["index"], np.ascontiguousarray(feed))
            interpreter.invoke()
        output_detail = interpreter.get_output_details()[0]
        result = {OUTPUT: dequantize(interpreter.get_tensor(output_detail["index"]), output_detail)}
        for tap_name, index in located.items():
            result[tap_name] = dequantize(interpreter.get_tensor(index), self._details[index])
        return result
