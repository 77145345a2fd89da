"""The litert-torch route: the card's torch module converted straight to LiteRT, no twin.

Google's PyTorch -> LiteRT converter (``litert_torch.convert``, formerly ai-edge-torch)
makes the fp32 file in the torch worker (it needs the module; TensorFlow is not
imported); AI Edge Quantizer recipes make the fp16, dynamic-range int8 and static int8
files from it (static int8 calibrated on the card's calibration set, with int8 input and
output, which the runner quantises and dequantises with the tensors' own parameters).
Each file records where the card's taps are (:mod:`.locate`); LiteRT runs them.
"""

from __future__ import annotations

from parity.backends import Backend, Exporter, Variant

_RUNNER = "parity.backends.litert_torch.runner:LiteRTTorchRunner"
_CONVERT = "parity.backends.litert_torch.convert"
_PACKAGES = ("torch", "litert-torch", "litert-converter", "ai-edge-litert")
_TAPS = "torch module paths in tensor names; shape and graph order where a name cannot say"
#: AI Edge Quantizer recipe of each quantised file.
RECIPES = {
    "fp16": "fp16 weights (weight-only, FLOAT_CASTING)",
    "dynamic": "dynamic-range int8 (dynamic_wi8_afp32)",
    "int8": "static int8 weights and activations, int8 I/O (static_wi8_ai8, calibrated)",
}


def _exporter(mode: str) -> Exporter:
    if mode == "fp32":
        return Exporter(
            "litert_torch_fp32", f"{_CONVERT}:export_fp32", "model.tflite", _PACKAGES,
            imports=("torch", "litert_torch"), worker="torch", keyed_on_taps=True,
        )  # fmt: skip
    return Exporter(
        f"litert_torch_{mode}", f"{_CONVERT}:export_quantized", "model.tflite",
        (*_PACKAGES, "ai-edge-quantizer"), requires=("litert_torch_fp32",),
        options={"recipe": mode}, imports=("torch", "litert_torch", "ai_edge_quantizer"),
        worker="torch", keyed_on_taps=True,
    )  # fmt: skip


#: Each file's precision class (the class of the budgets that judge it).
_PRECISION = {"fp32": "fp32", "fp16": "fp16", "dynamic": "dynamic-range", "int8": "int8"}


def _variant(name: str, mode: str, what: str, **options: bool) -> Variant:
    return Variant(
        name, "litert_torch", _RUNNER, f"litert_torch_{mode}", what, "ai_edge_litert",
        options, taps=_TAPS, precision=_PRECISION[mode],
    )  # fmt: skip


BACKEND = Backend(
    name="litert_torch",
    description="needs litert-torch (PyTorch -> LiteRT) and LiteRT",
    extra="litert-torch",
    imports=("litert_torch", "ai_edge_quantizer"),
    variants=(
        _variant("litert_torch_fp32", "fp32", "LiteRT + XNNPACK on the litert-torch conversion"),
        _variant("litert_torch_fp32_noxnn", "fp32",
                 "LiteRT builtin kernels, XNNPACK off, on the litert-torch conversion",
                 xnnpack=False),
        *(_variant(f"litert_torch_{mode}", mode, f"LiteRT + XNNPACK, litert-torch + AEQ {what}")
          for mode, what in RECIPES.items()),
    ),
    exporters=tuple(_exporter(mode) for mode in ("fp32", *RECIPES)),
    versions=("litert-torch", "ai-edge-quantizer"),
)  # fmt: skip
