"""The ONNX Runtime backend: runs the torch exports and tf2onnx's, and foreign ``.onnx`` files."""

from __future__ import annotations

from parity.backends import Backend, Variant

_ORT = "parity.backends.onnxruntime.runner:OnnxRuntimeRunner"
_SCOPES = "module scopes in node names / name_scopes metadata"


def _ort(name: str, exporter: str, description: str, **options: str) -> Variant:
    return Variant(
        name,
        "onnxruntime",
        _ORT,
        exporter,
        description,
        "onnxruntime",
        options,
        taps=_SCOPES if exporter != "tf2onnx" else "Keras layer names in value names",
        machine=_PROVIDER if "provider" in options else None,
    )


_PROVIDER = "parity.backends.onnxruntime.runner:provider_unavailable"
#: Execution providers other than the CPU's, used when the installed build has them.
_PROVIDERS = {"cuda": "CUDA", "tensorrt": "Tensorrt", "openvino": "OpenVINO"}


BACKEND = Backend(
    name="onnxruntime",
    description="needs ONNX Runtime",
    extra="onnx",
    imports=("onnxruntime", "onnx", "onnxscript"),
    variants=(
        _ort("ort_dynamo", "onnx_dynamo", "ONNX Runtime CPU on the torch.export-based ONNX export"),
        _ort("ort_torchscript", "onnx_torchscript",
             "ONNX Runtime CPU on the TorchScript ONNX export"),
        _ort("ort_dynamo_noopt", "onnx_dynamo",
             "ONNX Runtime CPU on the dynamo export, graph optimisations disabled",
             graph_optimization="disabled"),
        _ort("ort_tf2onnx", "tf2onnx",
             "ONNX Runtime CPU on the Keras twin converted by tf2onnx (NHWC input)"),
        *(_ort(f"ort_dynamo_{key}", "onnx_dynamo",
               f"ONNX Runtime {ep}ExecutionProvider on the dynamo export (n/a without it)",
               provider=f"{ep}ExecutionProvider")
          for key, ep in _PROVIDERS.items()),
    ),
    probe="parity.backends.onnxruntime.probe:OnnxProbe",
    suffixes=(".onnx",),
)  # fmt: skip
