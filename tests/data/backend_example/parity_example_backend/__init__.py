"""An example third-party backend: one package, registered by one entry-point line.

It adds a variant of ONNX Runtime that runs the TorchScript export with
graph optimisations disabled, as a backend of its own (``ort_single``), without any
edit to parity. Its registration is ``../parity_example_backend-0.dist-info/entry_points.txt``
(what ``[project.entry-points."parity.backends"]`` in its pyproject would install).
"""

from __future__ import annotations

from parity.backends import Backend, Variant

BACKEND = Backend(
    name="ort_single",
    description="needs ONNX Runtime (example backend)",
    extra="onnx",
    imports=("onnxruntime",),
    variants=(
        Variant(
            "ort_single_thread",
            "ort_single",
            "parity.backends.onnxruntime.runner:OnnxRuntimeRunner",
            "onnx_torchscript",
            "ONNX Runtime on the TorchScript export, no graph optimisation (example backend)",
            "onnxruntime",
            {"graph_optimization": "disabled"},
        ),
    ),
)
