"""The onnx2tf route: torch -> ONNX (TorchScript exporter) -> onnx2tf -> TFLite, in LiteRT.

onnx2tf (github.com/PINTO0309/onnx2tf) pins TensorFlow 2.19 and numpy 1.26, so it runs in
its own converter environment (:mod:`parity.converters`, spec
``parity/converters/onnx2tf.toml``), made once by ``parity converters install onnx2tf``;
until then these variants are ``n/a`` with that command. One onnx2tf run makes the fp32,
fp16-weight and dynamic-range int8 files from the card's TorchScript ONNX export (batch
fixed to 1 by `-ois`, NHWC input as onnx2tf writes it); parity's LiteRT worker runs them. onnx2tf
names tensors after TF ops, not torch modules: taps are located by parity's shape-and-order
rules on the first calibration image, and each file's metadata records how.
"""

from __future__ import annotations

from parity.backends import Backend, Exporter, Variant

_RUNNER = "parity.backends.litert_torch.runner:LiteRTTorchRunner"
_CONVERT = "parity.export.onnx2tf"
_TAPS = "shape and graph order (onnx2tf names tensors after TF ops, not torch modules)"
#: The file of each mode in onnx2tf's output folder, its precision class and what it is.
MODES = {
    "fp32": ("model_float32.tflite", "fp32", "fp32"),
    "fp16": ("model_float16.tflite", "fp16", "fp16 weights"),
    "dynamic": ("model_dynamic_range_quant.tflite", "dynamic-range", "dynamic-range int8"),
}


def _exporter(mode: str) -> Exporter:
    """``onnx2tf_fp32`` is the onnx2tf run (it writes every mode's file); the others take
    their file from its folder."""
    fp32 = mode == "fp32"
    return Exporter(
        f"onnx2tf_{mode}", f"{_CONVERT}:{'export_fp32' if fp32 else 'export_mode'}",
        "model.tflite", ("onnx", "ai-edge-litert"),
        requires=("onnx_torchscript",) if fp32 else ("onnx2tf_fp32",),
        options={"mode": mode}, imports=("torch", "onnx", "ai_edge_litert"), worker="torch",
        keyed_on_taps=True, converter="onnx2tf",
    )  # fmt: skip


def _variant(name: str, mode: str, what: str, **options: bool) -> Variant:
    return Variant(
        name, "onnx2tf", _RUNNER, f"onnx2tf_{mode}", what, "ai_edge_litert", options,
        taps=_TAPS, precision=MODES[mode][1],
    )  # fmt: skip


BACKEND = Backend(
    name="onnx2tf",
    description="needs LiteRT and the onnx2tf converter environment (parity converters install)",
    extra="litert",
    imports=("ai_edge_litert",),
    variants=(
        _variant("onnx2tf_fp32", "fp32", "LiteRT + XNNPACK on the onnx2tf conversion"),
        _variant("onnx2tf_fp32_noxnn", "fp32",
                 "LiteRT builtin kernels, XNNPACK off, on the onnx2tf conversion",
                 xnnpack=False),
        *(_variant(f"onnx2tf_{mode}", mode, f"LiteRT + XNNPACK, onnx2tf {what}")
          for mode, (_, _, what) in MODES.items() if mode != "fp32"),
    ),
    exporters=tuple(_exporter(mode) for mode in MODES),
)  # fmt: skip
