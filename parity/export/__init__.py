"""Exporters: torch model -> artifact files, registered by name.

An exporter is a function ``export(ctx, out_dir) -> metadata`` that writes its files into
``out_dir``; :mod:`parity.artifacts` caches the result by a content key (weights hash,
preprocessing hash, exporter name and options, package versions, upstream artifacts).
Adding an exporter is one function plus one line in :data:`EXPORTERS`.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parity.errors import ParityError

if TYPE_CHECKING:
    from parity.artifacts import BuildContext

ExportFunction = Callable[["BuildContext", Path, Mapping[str, Any]], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Exporter:
    """A named way to make one artifact.

    Attributes:
        name: registry name, also the cache folder name.
        target: ``module:function`` implementing it (imported only when used).
        filename: the main file it writes into its output folder.
        packages: distributions whose versions are part of the cache key.
        requires: exporters whose artifacts this one is built from.
        options: passed to the function; part of the cache key.
    """

    name: str
    target: str
    filename: str
    packages: tuple[str, ...]
    requires: tuple[str, ...] = ()
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def function(self) -> ExportFunction:
        module, _, attr = self.target.partition(":")
        fn: ExportFunction = getattr(importlib.import_module(module), attr)
        return fn


_TORCH_ONNX = ("torch", "onnx", "onnxscript")
_KERAS = ("torch", "tensorflow-cpu", "keras")

# fmt: off
EXPORTERS: dict[str, Exporter] = {e.name: e for e in [
    Exporter("onnx_dynamo", "parity.export.onnx:export_onnx", "model.onnx", _TORCH_ONNX,
             options={"dynamo": True}),
    Exporter("onnx_torchscript", "parity.export.onnx:export_onnx", "model.onnx", _TORCH_ONNX,
             options={"dynamo": False}),
    Exporter("keras", "parity.export.keras.artifact:export_keras", "model.keras", _KERAS),
    Exporter("tf2onnx", "parity.export.tf2onnx:export_tf2onnx", "model.onnx",
             ("torch", "tensorflow-cpu", "keras", "tf2onnx", "onnx"), requires=("keras",)),
    Exporter("keras_savedmodel", "parity.export.tflite:export_saved_model", "saved_model.pb",
             _KERAS, requires=("keras",)),
    Exporter("tflite_fp32", "parity.export.tflite:export_tflite", "model.tflite", _KERAS,
             requires=("keras_savedmodel",), options={"mode": "fp32"}),
    Exporter("tflite_fp16", "parity.export.tflite:export_tflite", "model.tflite", _KERAS,
             requires=("keras_savedmodel",), options={"mode": "fp16"}),
    Exporter("tflite_dynamic", "parity.export.tflite:export_tflite", "model.tflite", _KERAS,
             requires=("keras_savedmodel",), options={"mode": "dynamic"}),
    Exporter("tflite_int8", "parity.export.tflite:export_tflite", "model.tflite", _KERAS,
             requires=("keras_savedmodel",), options={"mode": "int8"}),
    Exporter("tflite_int8_io", "parity.export.tflite:export_tflite", "model.tflite", _KERAS,
             requires=("keras_savedmodel",), options={"mode": "int8_io"}),
]}
# fmt: on


def get_exporter(name: str) -> Exporter:
    if name not in EXPORTERS:
        raise ParityError(f"unknown exporter {name!r}; known: {', '.join(EXPORTERS)}")
    return EXPORTERS[name]
