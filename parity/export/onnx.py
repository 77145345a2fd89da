"""torch -> ONNX with both torch exporters, checked by ``onnx.checker``.

* ``dynamo=True`` (the default torch.export-based exporter, needs onnxscript): node
  names are generic, module paths live in ``metadata_props['pkg.torch.onnx.name_scopes']``;
  BatchNorm is folded into Conv. Written as one file (``external_data=False``).
* ``dynamo=False`` (TorchScript, deprecated but common): node names carry module paths.

Both export a dynamic batch axis named ``batch``, input ``input`` and output ``output``.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parity import lazy
from parity.errors import runtime_failure

if TYPE_CHECKING:
    from parity.artifacts import BuildContext

#: Opset for the TorchScript exporter (the dynamo exporter picks its own, 20 here).
TORCHSCRIPT_OPSET = 17


def export_onnx(ctx: BuildContext, out: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """Export ``ctx``'s torch model to ``out``; return metadata (exporter, opset, versions)."""
    torch = lazy.torch()
    onnx = lazy.require("onnx")
    module = ctx.model().module
    example = (torch.zeros(ctx.card.input_shape),)
    names = {"input_names": ["input"], "output_names": ["output"]}
    # The exporters print progress and advice to stdout/stderr; the harness has its own.
    # The TorchScript exporter is deprecated; exporting with it is this variant's point.
    with (
        runtime_failure(f"torch.onnx.export (dynamo={options['dynamo']}) failed"),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", DeprecationWarning)
        if options["dynamo"]:
            batch = torch.export.Dim("batch", min=1, max=4096)
            torch.onnx.export(
                module,
                example,
                str(out),
                dynamo=True,
                external_data=False,
                dynamic_shapes=({0: batch},),
                verbose=False,
                **names,
            )
        else:
            torch.onnx.export(
                module,
                example,
                str(out),
                dynamo=False,
                opset_version=TORCHSCRIPT_OPSET,
                dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                **names,
            )
    with runtime_failure(f"{out}: the ONNX checker refuses torch's export"):
        onnx.checker.check_model(str(out), full_check=True)
    proto = onnx.load(str(out), load_external_data=False)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return {
        "exporter": "torch.onnx.export(dynamo=True)"
        if options["dynamo"]
        else "torch.onnx.export(dynamo=False)",
        "opset": opset,
        "nodes": len(proto.graph.node),
    }
