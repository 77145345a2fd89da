"""TFLite artifacts converted from the cached Keras twin, one per quantisation mode.

Convert once, quantise many: the Keras twin is written once as a SavedModel (its own
cached artifact, ``keras_savedmodel``: the inference endpoint exactly as
``TFLiteConverter.from_keras_model`` would export it for every mode) and every mode is
converted from it with ``TFLiteConverter.from_saved_model``; the models are the ones
``from_keras_model`` makes (same tensors and outputs, to the bit; only the flatbuffer's
conversion metadata names the source type). ``from_concrete_functions`` silently makes
NaN models here (../shared/STACK.md). Modes:

* ``fp32``: plain conversion.
* ``fp16``: float16 weights (dequantised to float32 at load time by the CPU kernels).
* ``dynamic``: dynamic-range quantisation: int8 weights, float activations, no data.
* ``int8``: full integer (weights and activations int8), float input and output.
* ``int8_io``: full integer with int8 input and output tensors.

The full-integer modes are calibrated on a representative dataset: by default the
calibration images through the card's fixed preprocessing (``calibration="images"``).
``calibration="noise"`` feeds standard-normal noise of the same shape instead; it exists
to demonstrate that pitfall, not to be used.

The artifact's ``runner_options`` are the Keras artifact's (``tap_layers``) plus
``output_layer``, the Keras layer whose output the converter renames to the model output
(``StatefulPartitionedCall_1:0``), so the runner can map that layer's tap to it.
"""

from __future__ import annotations

import contextlib
import functools
import io
import time
import warnings
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from parity import lazy
from parity.backends.keras.internals import producer
from parity.backends.litert.internals import ops_details
from parity.errors import ParityError, runtime_failure

if TYPE_CHECKING:
    from parity.artifacts import BuildContext

#: Conversion modes, in order of decreasing precision.
MODES = ("fp32", "fp16", "dynamic", "int8", "int8_io")
#: Modes that need a representative dataset.
CALIBRATED_MODES = ("int8", "int8_io")
#: Sources of the representative dataset.
CALIBRATIONS = ("images", "noise")


def representative_batch(ctx: BuildContext, calibration: str = "images") -> np.ndarray:
    """The representative dataset, NHWC float32 (the runtime's input layout)."""
    images = ctx.calibration_batch().transpose(0, 2, 3, 1)
    if calibration == "images":
        return np.ascontiguousarray(images, dtype=np.float32)
    if calibration == "noise":
        rng = np.random.default_rng(0)
        return rng.standard_normal(images.shape, dtype=np.float32)
    raise ParityError(f"unknown TFLite calibration {calibration!r}; known: {CALIBRATIONS}")


def convert_keras_model(model: Any, mode: str, representative: np.ndarray | None = None) -> bytes:
    """Convert a live ``keras.Model`` to TFLite flatbuffer bytes in ``mode``.

    Args:
        model: the Keras model (NHWC input).
        mode: one of :data:`MODES`.
        representative: NHWC float32 calibration batch; required by the int8 modes.
    """
    _check_mode(mode, representative)
    tf = lazy.tensorflow()
    return _convert(tf.lite.TFLiteConverter.from_keras_model(model), mode, representative)


def convert_saved_model(folder: Path, mode: str, representative: np.ndarray | None = None) -> bytes:
    """Convert a SavedModel written by :func:`write_saved_model` to TFLite in ``mode``."""
    _check_mode(mode, representative)
    tf = lazy.tensorflow()
    return _convert(tf.lite.TFLiteConverter.from_saved_model(str(folder)), mode, representative)


def write_saved_model(model: Any, folder: Path) -> None:
    """The model's inference endpoint as a SavedModel, as ``from_keras_model`` exports it.

    The same ``ExportArchive`` endpoint (``__call__`` with ``training=False``, the model's
    input specs by name) that the converter writes to a temporary folder for every mode.
    """
    tf = lazy.tensorflow()
    keras = lazy.require("keras")
    archive = keras.export.ExportArchive()
    archive.track(model)
    signature = [tf.TensorSpec(x.shape, dtype=x.dtype, name=x.name) for x in model.inputs]
    archive.add_endpoint("serve", functools.partial(model.__call__, training=False), signature)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the endpoint's signature
        archive.write_out(str(folder))


def _check_mode(mode: str, representative: np.ndarray | None) -> None:
    if mode not in MODES:
        raise ParityError(f"unknown TFLite mode {mode!r}; known: {', '.join(MODES)}")
    if mode in CALIBRATED_MODES and representative is None:
        raise ParityError(f"TFLite mode {mode!r} needs a representative dataset")


def _convert(converter: Any, mode: str, representative: np.ndarray | None) -> bytes:
    """Set ``converter`` up for ``mode`` and convert."""
    tf = lazy.tensorflow()
    if mode != "fp32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if mode in CALIBRATED_MODES:
        assert representative is not None
        batch = representative

        def dataset() -> Iterator[list[np.ndarray]]:
            for image in batch:
                yield [image[None]]

        converter.representative_dataset = dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if mode == "int8_io":
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    # The converter prints the model's signature (hundreds of lines); for int8 I/O it
    # warns that no input statistics were given (it uses the dataset).
    with (
        runtime_failure(f"the TFLite converter failed ({mode})"),
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
        content: bytes = converter.convert()
    return content


def output_layer(model: Any) -> str:
    """Name of the Keras layer producing the model's (single) output."""
    return str(producer(model.outputs[0]).name)


def _tensor_summary(detail: Mapping[str, Any]) -> dict[str, Any]:
    scales = detail["quantization_parameters"]["scales"]
    zero_points = detail["quantization_parameters"]["zero_points"]
    summary: dict[str, Any] = {
        "name": detail["name"],
        "dtype": np.dtype(detail["dtype"]).name,
        "shape": [int(d) for d in detail["shape_signature"]],
    }
    if len(scales):
        summary["scale"] = [float(s) for s in scales]
        summary["zero_point"] = [int(z) for z in zero_points]
    return summary


def describe_tflite(content: bytes) -> dict[str, Any]:
    """Input/output dtypes and quantisation parameters, and op counts, of a model."""
    interpreter_module = lazy.require("ai_edge_litert.interpreter")
    interpreter = interpreter_module.Interpreter(
        model_content=content,
        experimental_op_resolver_type=(
            interpreter_module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        ),
    )
    ops = Counter(op["op_name"] for op in ops_details(interpreter))
    return {
        "inputs": [_tensor_summary(d) for d in interpreter.get_input_details()],
        "outputs": [_tensor_summary(d) for d in interpreter.get_output_details()],
        "ops": dict(sorted(ops.items())),
    }


def export_saved_model(ctx: BuildContext, out: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """Write the cached ``keras`` artifact as a SavedModel into ``out``'s folder."""
    keras_artifact = ctx.artifact("keras")
    lazy.tensorflow()
    keras = lazy.require("keras")
    model = keras.models.load_model(keras_artifact.path, compile=False)
    write_saved_model(model, out.parent)
    runner_options = dict(keras_artifact.metadata.get("runner_options", {}))
    runner_options["output_layer"] = output_layer(model)
    return {
        "exporter": "keras.export.ExportArchive of the Keras twin (inference endpoint)",
        "runner_options": runner_options,
        "keras_bytes": keras_artifact.size_bytes,
    }


def export_tflite(ctx: BuildContext, out: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """Convert the cached ``keras_savedmodel`` artifact to ``out`` in ``options["mode"]``."""
    mode = str(options["mode"])
    calibration = str(options.get("calibration", "images"))
    saved = ctx.artifact("keras_savedmodel")
    representative = None
    if mode in CALIBRATED_MODES:
        representative = representative_batch(ctx, calibration)
    start = time.perf_counter()
    content = convert_saved_model(saved.path.parent, mode, representative)
    seconds = time.perf_counter() - start
    out.write_bytes(content)
    return {
        "exporter": "tf.lite.TFLiteConverter.from_saved_model on the Keras twin's SavedModel",
        "runner_options": dict(saved.metadata["runner_options"]),
        "converter": {
            "mode": mode,
            "calibration": calibration if representative is not None else None,
            "calibration_images": 0 if representative is None else len(representative),
            "convert_seconds": round(seconds, 3),
            "keras_bytes": saved.metadata["keras_bytes"],
            "tflite_bytes": len(content),
            **describe_tflite(content),
        },
    }
