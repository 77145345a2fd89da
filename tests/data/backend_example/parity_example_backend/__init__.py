"""An example third-party backend: one package, registered by one entry-point line.

It adds a variant of ONNX Runtime that runs the TorchScript export with
graph optimisations disabled, as a backend of its own (``ort_single``), without any
edit to parity. Its registration is ``../parity_example_backend-0.dist-info/entry_points.txt``
(what ``[project.entry-points."parity.backends"]`` in its pyproject would install).
Its runner is its own class (parity's ONNX Runtime runner, plus a record of the threads
each session got, for tests/test_threads.py to observe a worker's thread budget).
"""

from __future__ import annotations

import os
from typing import Any

from parity.backends import Backend, Variant
from parity.backends.onnxruntime.runner import OnnxRuntimeRunner

#: Where set, each ONNX Runtime session appends its intra-op thread count to this file.
THREADS_LOG = "PARITY_EXAMPLE_THREADS_LOG"


class RecordingRunner(OnnxRuntimeRunner):
    """:class:`OnnxRuntimeRunner` that logs the threads each session was configured with."""

    def _session(self, model_bytes: bytes) -> Any:
        session = super()._session(model_bytes)
        if log := os.environ.get(THREADS_LOG):
            with open(log, "a", encoding="utf-8") as handle:
                handle.write(f"{session.get_session_options().intra_op_num_threads}\n")
        return session


BACKEND = Backend(
    name="ort_single",
    description="needs ONNX Runtime (example backend)",
    extra="onnx",
    imports=("onnxruntime",),
    variants=(
        Variant(
            "ort_single_thread",
            "ort_single",
            "parity_example_backend:RecordingRunner",
            "onnx_torchscript",
            "ONNX Runtime on the TorchScript export, no graph optimisation (example backend)",
            "onnxruntime",
            {"graph_optimization": "disabled"},
        ),
    ),
)
