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
    #: ``module:function`` taking :attr:`options` and returning why the variant cannot run
    #: on this machine (no GPU, an execution provider missing), or ``None``.
    probe: str | None = None

    def runner_class(self) -> type:
        module, _, cls = self.runner.partition(":")
        runner_cls: type = getattr(importlib.import_module(module), cls)
        return runner_cls

    def unavailable(self) -> str | None:
        """Why this variant does not apply here (an ``n/a`` row), or ``None``."""
        if self.probe is None:
            return None
        module, _, function = self.probe.partition(":")
        reason: str | None = getattr(importlib.import_module(module), function)(self.options)
        return reason


_TORCH = "parity.runtimes.torch:TorchRunner"
_ORT = "parity.runtimes.onnxruntime:OnnxRuntimeRunner"
_KERAS = "parity.runtimes.keras:KerasRunner"
_LITERT = "parity.runtimes.litert:LiteRTRunner"

_OV = "parity.runtimes.openvino:OpenVINORunner"
_OV_PRECISION = "parity.runtimes.openvino:precision_unavailable"
_CUDA = "parity.runtimes.torch:cuda_unavailable"
_STRICT = {"tf32": False}
_CUDA_MODES: list[tuple[str, str, dict[str, Any]]] = [
    ("fp32", "eager fp32, TF32 off (cudnn.allow_tf32 = matmul.allow_tf32 = False)", _STRICT),
    ("tf32", "eager fp32 with torch's defaults (cuDNN convolutions in TF32)", {"tf32": True}),
    ("channels_last", "eager fp32, channels_last, TF32 off", {**_STRICT, "channels_last": True}),
    ("fp16", "eager under autocast float16", {"autocast": "float16"}),
    ("bf16", "eager under autocast bfloat16", {"autocast": "bfloat16"}),
    ("compile", "torch.compile (inductor, Triton), fp32, TF32 off", {**_STRICT, "compile": True}),
]

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
    Variant("openvino_onnx", "openvino", _OV, "openvino_onnx",
            "OpenVINO CPU reading the dynamo ONNX export, f32", "openvino"),
    *[Variant(f"openvino_{precision}", "openvino", _OV, "openvino_ir",
              f"OpenVINO CPU on IR converted from the dynamo ONNX export, {precision} inference",
              "openvino", {"precision": precision}, _OV_PRECISION)
      for precision in ("f32", "bf16", "f16")],
    Variant("torch_compile", "torch_cpu", _TORCH, None,
            "torch.compile (inductor, C++ codegen) on the CPU, fp32", "torch", {"compile": True}),
    Variant("torch_cpu_bf16", "torch_cpu", _TORCH, None,
            "torch eager on the CPU under autocast bfloat16", "torch", {"autocast": "bfloat16"}),
    *[Variant(f"torch_cuda_{suffix}", "torch_cuda", _TORCH, None, f"torch on CUDA: {text}",
              "torch", {"device": "cuda", **options}, _CUDA)
      for suffix, text, options in _CUDA_MODES],
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
