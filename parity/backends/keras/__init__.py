"""The Keras backend (TensorFlow CPU): the Keras twin, and the TFLite/tf2onnx artifacts TF makes."""

from __future__ import annotations

from parity.backends import Backend, Exporter, Variant

_KERAS = ("torch", "tensorflow-cpu", "keras")
#: In the tf2onnx artifact's cache key: bump when :mod:`parity.export.tf2onnx_convert` changes
#: what it writes (2: pinned, made-up names renumbered by its ``canonical``).
_TF2ONNX_RECIPE = 2


def _tflite(mode: str) -> Exporter:
    return Exporter(
        f"tflite_{mode}",
        "parity.export.tflite:export_tflite",
        "model.tflite",
        _KERAS,
        requires=("keras_savedmodel",),
        options={"mode": mode},
    )


BACKEND = Backend(
    name="keras",
    description="needs TensorFlow/Keras",
    extra="tf",
    imports=("tensorflow", "keras", "tf2onnx"),
    variants=(
        Variant("keras", "keras", "parity.backends.keras.runner:KerasRunner", "keras",
                "Keras 3 twin (TensorFlow CPU, NHWC) with the torch weights", "tensorflow",
                taps="outputs of the twin's layers named after torch modules"),
    ),
    exporters=(
        Exporter("keras", "parity.export.keras.artifact:export_keras", "model.keras", _KERAS,
                 imports=("torch", "tensorflow", "keras"), handoff=("state_dict",),
                 card_key=("keras_twin", "Keras twin")),
        Exporter("tf2onnx", "parity.export.tf2onnx:export_tf2onnx", "model.onnx",
                 ("torch", "tensorflow-cpu", "keras", "tf2onnx", "onnx"), requires=("keras",),
                 options={"recipe": _TF2ONNX_RECIPE}, imports=("tensorflow", "tf2onnx", "onnx")),
        Exporter("keras_savedmodel", "parity.export.tflite:export_saved_model", "saved_model.pb",
                 _KERAS, requires=("keras",), imports=("tensorflow", "keras")),
        *(_tflite(mode) for mode in ("fp32", "fp16", "dynamic", "int8", "int8_io")),
    ),
    probe="parity.backends.keras.probe:KerasProbe",
    suffixes=(".keras", ".h5"),
    versions=("tensorflow-cpu", "keras", "tf2onnx"),
    preload=("tensorflow", "keras"),
)  # fmt: skip
