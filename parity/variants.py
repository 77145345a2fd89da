"""The runtime variant registry: a variant is data (a name, a runner, an artifact, options).

A variant's family (``torch``, ``onnxruntime``, ``keras``, ``litert``) is the pytest
marker and the ``--runtime`` shorthand. Adding a runtime is one runner file plus lines
here; adding an option combination is one line.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping, Sequence
from typing import Any

from parity.errors import ParityError

#: The family whose runner is the reference for live checks.
REFERENCE = "torch"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way of running the model.

    Attributes:
        name: registry name, used in reports, budgets and test ids (``ort_dynamo``).
        family: runtime family (pytest marker, installed-package check).
        runner: ``module:Class`` of the :class:`~parity.runtimes.base.Runner`.
        exporter: name of the artifact it runs (``None`` for the torch reference).
        options: keyword arguments for the runner.
        description: one line for ``parity list``.
        module: the Python module the family needs installed.
    """

    name: str
    family: str
    runner: str
    exporter: str | None
    description: str
    module: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def runner_class(self) -> type:
        module, _, cls = self.runner.partition(":")
        runner_cls: type = getattr(importlib.import_module(module), cls)
        return runner_cls


_TORCH = "parity.runtimes.torch:TorchRunner"
_ORT = "parity.runtimes.onnxruntime:OnnxRuntimeRunner"
_KERAS = "parity.runtimes.keras:KerasRunner"
_LITERT = "parity.runtimes.litert:LiteRTRunner"

# fmt: off
VARIANTS: dict[str, Variant] = {v.name: v for v in [
    Variant("torch", "torch", _TORCH, None, "torch eager, CPU (the reference)", "torch"),
    Variant("ort_dynamo", "onnxruntime", _ORT, "onnx_dynamo",
            "ONNX Runtime CPU on the torch.export-based ONNX export", "onnxruntime"),
    Variant("ort_torchscript", "onnxruntime", _ORT, "onnx_torchscript",
            "ONNX Runtime CPU on the TorchScript ONNX export", "onnxruntime"),
    Variant("ort_dynamo_noopt", "onnxruntime", _ORT, "onnx_dynamo",
            "ONNX Runtime CPU on the dynamo export, graph optimisations disabled",
            "onnxruntime", {"graph_optimization": "disabled"}),
    Variant("keras", "keras", _KERAS, "keras",
            "Keras 3 twin (TensorFlow CPU, NHWC) with the torch weights", "tensorflow"),
    Variant("ort_tf2onnx", "onnxruntime", _ORT, "tf2onnx",
            "ONNX Runtime CPU on the Keras twin converted by tf2onnx (NHWC input)", "onnxruntime"),
    Variant("litert_fp32", "litert", _LITERT, "tflite_fp32",
            "LiteRT + XNNPACK on TFLite fp32", "ai_edge_litert"),
    Variant("litert_fp32_noxnn", "litert", _LITERT, "tflite_fp32",
            "LiteRT builtin kernels, XNNPACK off, on TFLite fp32", "ai_edge_litert",
            {"xnnpack": False}),
    Variant("litert_fp16", "litert", _LITERT, "tflite_fp16",
            "LiteRT + XNNPACK on TFLite fp16 weights", "ai_edge_litert"),
    Variant("litert_fp16_noxnn", "litert", _LITERT, "tflite_fp16",
            "LiteRT builtin kernels, XNNPACK off, on TFLite fp16 weights", "ai_edge_litert",
            {"xnnpack": False}),
    Variant("litert_dynamic", "litert", _LITERT, "tflite_dynamic",
            "LiteRT + XNNPACK on TFLite dynamic-range int8 weights", "ai_edge_litert"),
    Variant("litert_dynamic_noxnn", "litert", _LITERT, "tflite_dynamic",
            "LiteRT builtin kernels, XNNPACK off, on TFLite dynamic-range int8 weights",
            "ai_edge_litert", {"xnnpack": False}),
    Variant("litert_int8", "litert", _LITERT, "tflite_int8",
            "LiteRT + XNNPACK on TFLite full int8, float I/O", "ai_edge_litert"),
    Variant("litert_int8_noxnn", "litert", _LITERT, "tflite_int8",
            "LiteRT builtin kernels, XNNPACK off, on TFLite full int8, float I/O", "ai_edge_litert",
            {"xnnpack": False}),
    Variant("litert_int8_io", "litert", _LITERT, "tflite_int8_io",
            "LiteRT + XNNPACK on TFLite full int8, int8 I/O", "ai_edge_litert"),
    Variant("litert_int8_io_noxnn", "litert", _LITERT, "tflite_int8_io",
            "LiteRT builtin kernels, XNNPACK off, on TFLite full int8, int8 I/O", "ai_edge_litert",
            {"xnnpack": False}),
]}
# fmt: on

#: What `parity run` checks when no --runtime is given.
DEFAULT_VARIANTS = ("ort_dynamo", "ort_torchscript")


def families() -> list[str]:
    return sorted({v.family for v in VARIANTS.values()})


def resolve_variants(selectors: Sequence[str] | None) -> list[Variant]:
    """Variants named by exact name or family (``onnxruntime`` = all its variants)."""
    if not selectors:
        return [VARIANTS[name] for name in DEFAULT_VARIANTS]
    chosen: list[Variant] = []
    for selector in selectors:
        matches = [v for v in VARIANTS.values() if selector in (v.name, v.family)]
        if not matches:
            raise ParityError(
                f"unknown runtime {selector!r}; variants: {', '.join(VARIANTS)}; "
                f"families: {', '.join(families())}"
            )
        chosen.extend(m for m in matches if m not in chosen)
    return chosen
