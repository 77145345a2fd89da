"""ONNX -> OpenVINO: the dynamo ONNX export as OpenVINO reads it, and as OpenVINO IR.

Both artifacts record ``tap_values`` (tap name -> ONNX value name), located once here
from the ONNX file's module scopes (``onnx`` is needed at export time only). OpenVINO
keeps ONNX value names as tensor names in its model and in the IR it writes, so the
OpenVINO runner marks those tensors as outputs without ``onnx`` or torch installed.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parity import lazy
from parity.backends.onnxruntime.runner import locate_taps, torch_scope
from parity.errors import runtime_failure
from parity.fixtures import file_sha256

if TYPE_CHECKING:
    from parity.artifacts import BuildContext


def export_openvino(ctx: BuildContext, out: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """Write the dynamo ONNX export (``format="onnx"``) or its OpenVINO IR (``"ir"``)."""
    onnx = lazy.require("onnx")
    source = ctx.artifact("onnx_dynamo").path
    tap_values = locate_taps(onnx.load(str(source)), ctx.card.taps, torch_scope)
    runner_options: dict[str, Any] = {"tap_values": tap_values}
    if options["format"] == "onnx":
        shutil.copyfile(source, out)
        converter = "none: OpenVINO's ONNX frontend reads the file at load"
    else:
        ov = lazy.require("openvino")
        with runtime_failure(f"{source}: OpenVINO cannot convert it"):
            model = ov.convert_model(str(source))
            ov.save_model(model, str(out), compress_to_fp16=False)
        runner_options["bin_sha256"] = file_sha256(out.with_suffix(".bin"))
        converter = f"openvino.convert_model + save_model (fp32 weights), {ov.__version__}"
    return {"converter": converter, "source": "onnx_dynamo", "runner_options": runner_options}
