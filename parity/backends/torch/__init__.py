"""The torch backend: the eager reference, and the ONNX artifacts torch's exporters make."""

from __future__ import annotations

from parity.backends import Backend, Exporter, Variant

_TORCH_ONNX = ("torch", "onnx", "onnxscript")

BACKEND = Backend(
    name="torch",
    description="needs the torch reference runtime",
    extra="torch",
    imports=("torch", "torchvision"),
    variants=(
        Variant("torch", "torch", "parity.backends.torch.runner:TorchRunner", None,
                "torch eager, CPU (the reference)", "torch", reference=True, runs_on="module",
                taps="forward hooks on the named modules"),
    ),
    exporters=(
        Exporter("onnx_dynamo", "parity.export.onnx:export_onnx", "model.onnx", _TORCH_ONNX,
                 options={"dynamo": True}, imports=("torch", "onnx", "onnxscript")),
        Exporter("onnx_torchscript", "parity.export.onnx:export_onnx", "model.onnx", _TORCH_ONNX,
                 options={"dynamo": False}, imports=("torch", "onnx")),
    ),
    versions=("torch", "onnx"),
    preload=("torch",),  # with torchvision (parity.lazy.torch)
)  # fmt: skip
