"""The OpenVINO backend (CPU plugin): the dynamo ONNX export read directly, and IR made from it.

bf16 / f16 are ``INFERENCE_PRECISION_HINT`` variants, judged by bf16 / fp16 budgets; on a
CPU that cannot execute them the runner emulates them (see
:mod:`parity.backends.openvino.runner`), so their verdict is the same on every CPU.
"""

from __future__ import annotations

from parity.backends import Backend, Exporter, Variant

_OV = "parity.backends.openvino.runner:OpenVINORunner"
_TAPS = "ONNX value names (located at export from module scopes) marked as outputs"
_EXPORT = "parity.export.openvino:export_openvino"


def _ir(precision: str) -> Variant:
    return Variant(
        f"openvino_{precision}",
        "openvino",
        _OV,
        "openvino_ir",
        f"OpenVINO CPU on IR converted from the dynamo ONNX export, {precision} inference",
        "openvino",
        {"precision": precision},
        taps=_TAPS,
        precision={"f32": "fp32", "bf16": "bf16", "f16": "fp16"}[precision],
    )


BACKEND = Backend(
    name="openvino",
    description="needs OpenVINO",
    extra="openvino",
    imports=("openvino",),
    variants=(
        Variant("openvino_onnx", "openvino", _OV, "openvino_onnx",
                "OpenVINO CPU reading the dynamo ONNX export, f32", "openvino", taps=_TAPS),
        *(_ir(precision) for precision in ("f32", "bf16", "f16")),
    ),
    exporters=(
        Exporter("openvino_onnx", _EXPORT, "model.onnx", ("onnx",), requires=("onnx_dynamo",),
                 options={"format": "onnx"}, imports=("onnx",)),
        Exporter("openvino_ir", _EXPORT, "model.xml", ("onnx", "openvino"),
                 requires=("onnx_dynamo",), options={"format": "ir"},
                 imports=("onnx", "openvino")),
    ),
    versions=("openvino",),
)  # fmt: skip
