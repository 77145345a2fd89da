"""The LiteRT backend: TFLite files (made by the Keras backend, or elsewhere), XNNPACK on/off."""

from __future__ import annotations

from parity.backends import Backend, Variant

_LITERT = "parity.backends.litert.runner:LiteRTRunner"
_MODES = {
    "fp32": "TFLite fp32",
    "fp16": "TFLite fp16 weights",
    "dynamic": "TFLite dynamic-range int8 weights",
    "int8": "TFLite full int8, float I/O",
    "int8_io": "TFLite full int8, int8 I/O",
}
#: Each mode's precision class (the class of the budgets that judge it).
_PRECISION = {"fp32": "fp32", "fp16": "fp16", "dynamic": "dynamic-range", "int8": "int8",
              "int8_io": "int8"}  # fmt: skip


def _variants(mode: str, what: str) -> tuple[Variant, Variant]:
    taps = "Keras layer names inside fused tensor names (preserve-all-tensors)"
    on = Variant(
        f"litert_{mode}",
        "litert",
        _LITERT,
        f"tflite_{mode}",
        f"LiteRT + XNNPACK on {what}",
        "ai_edge_litert",
        taps=taps,
        precision=_PRECISION[mode],
    )
    off = Variant(
        f"litert_{mode}_noxnn",
        "litert",
        _LITERT,
        f"tflite_{mode}",
        f"LiteRT builtin kernels, XNNPACK off, on {what}",
        "ai_edge_litert",
        {"xnnpack": False},
        taps=taps,
        precision=_PRECISION[mode],
    )
    return on, off


BACKEND = Backend(
    name="litert",
    description="needs LiteRT",
    extra="litert",
    imports=("ai_edge_litert",),
    variants=tuple(v for mode, what in _MODES.items() for v in _variants(mode, what)),
    probe="parity.backends.litert.probe:LiteProbe",
    suffixes=(".tflite",),
)  # fmt: skip
