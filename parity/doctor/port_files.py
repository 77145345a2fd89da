"""``port_lint`` on a file a user brings: a Keras port (``.keras``), ONNX or TFLite.

A ``.keras`` file is loaded and linted layer by layer (:func:`diagnose_port`). ONNX and
TFLite graphs are linted op by op for what differs from torch's defaults: 'same' (or
asymmetric) padding on strided convolutions and pooling, average pooling that excludes
the padding, BatchNorm epsilon, ceil-mode pooling, and align-corners resizing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parity import lazy
from parity.doctor.findings import OK, PROBLEM, Finding
from parity.doctor.port_lint import TORCH_BN_EPS, diagnose_port
from parity.errors import ParityError

#: What each rule means, and how to fix it in the exporter / port.
RULES = {
    "stride2_same_padding": (
        "strided conv/pool with 'same' or asymmetric padding (TF pads bottom/right only, "
        "torch pads symmetrically)",
        "pad explicitly and symmetrically (ZeroPadding2D + 'valid'; pads begin == end)",
    ),
    "avgpool_excludes_padding": (
        "average pooling that excludes the padding (torch's count_include_pad=True includes it)",
        "count_include_pad=1 / explicit zero padding then 'valid' pooling",
    ),
    "bn_epsilon_mismatch": (
        f"BatchNorm epsilon != torch's {TORCH_BN_EPS:g}",
        f"epsilon={TORCH_BN_EPS:g}",
    ),
    "ceil_mode_pooling": (
        "ceil-mode pooling (torch's default is floor; check the torch module's ceil_mode)",
        "ceil_mode=0 unless the torch model sets ceil_mode=True",
    ),
    "align_corners_resize": (
        "resize with align_corners / asymmetric coordinates (torch's default "
        "align_corners=False is half_pixel)",
        "coordinate_transformation_mode='half_pixel' (align_corners=False)",
    ),
}


def lint_port_file(path: Path) -> Finding:
    """Lint a ``.keras``, ``.onnx`` or ``.tflite`` file; bad input is a ParityError."""
    path = Path(path)
    if not path.is_file():
        raise ParityError(f"--port {path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".keras":
        lazy.tensorflow()
        keras = lazy.require("keras")
        try:
            model = keras.models.load_model(path, compile=False)
        except Exception as exc:  # Keras raises many types for a bad archive
            raise ParityError(f"--port {path}: not a loadable Keras model ({exc})") from None
        finding = diagnose_port(model)
        finding.evidence["file"] = str(path)
        return finding
    if suffix == ".onnx":
        return _finding(path, _onnx_issues(path))
    if suffix == ".tflite":
        return _finding(path, _tflite_issues(path))
    raise ParityError(f"--port {path}: expected a .keras, .onnx or .tflite file")


def _finding(path: Path, linted: tuple[dict[str, list[str]], int]) -> Finding:
    issues, checked = linted
    evidence: dict[str, Any] = {"file": str(path), "ops_checked": checked}
    found = {rule: ops for rule, ops in issues.items() if ops}
    evidence.update(found)
    if not found:
        return Finding("port_lint", OK, f"{path.name}: no op differs from torch defaults", evidence)
    causes = [f"{len(ops)} {RULES[rule][0]} (e.g. {ops[0]})" for rule, ops in found.items()]
    fix = "; ".join(RULES[rule][1] for rule in found)
    return Finding("port_lint", PROBLEM, f"{path.name}: " + "; ".join(causes), evidence, fix)


def _onnx_issues(path: Path) -> tuple[dict[str, list[str]], int]:
    onnx = lazy.require("onnx")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # DecodeError and friends
        raise ParityError(f"--port {path}: not an ONNX model ({exc})") from None
    issues: dict[str, list[str]] = {rule: [] for rule in RULES}
    checked = 0
    for node in model.graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        name = f"{node.name or node.output[0]} ({node.op_type})"
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
        if node.op_type in ("Conv", "MaxPool", "AveragePool"):
            checked += 1
            strided = max(attrs.get("strides", [1])) > 1
            pads = list(attrs.get("pads", []))
            half = len(pads) // 2
            asymmetric = bool(pads) and pads[:half] != pads[half:]
            if strided and (auto_pad.startswith("SAME") or asymmetric):
                issues["stride2_same_padding"].append(name)
            if attrs.get("ceil_mode", 0):
                issues["ceil_mode_pooling"].append(name)
            excludes = node.op_type == "AveragePool" and not attrs.get("count_include_pad", 0)
            if excludes and (any(pads) or auto_pad.startswith("SAME")):
                issues["avgpool_excludes_padding"].append(name)
        elif node.op_type == "BatchNormalization":
            checked += 1
            if abs(float(attrs.get("epsilon", 1e-5)) - TORCH_BN_EPS) > 1e-3 * TORCH_BN_EPS:
                issues["bn_epsilon_mismatch"].append(f"{name} epsilon {attrs.get('epsilon'):g}")
        elif node.op_type == "Resize":
            checked += 1
            mode = attrs.get("coordinate_transformation_mode", b"half_pixel")
            mode = mode.decode() if isinstance(mode, bytes) else str(mode)
            if mode in ("align_corners", "asymmetric"):
                issues["align_corners_resize"].append(f"{name} {mode}")
    return issues, checked


def _tflite_issues(path: Path) -> tuple[dict[str, list[str]], int]:
    lazy.tensorflow()
    flatbuffer_utils = lazy.require("tensorflow.lite.tools.flatbuffer_utils")
    schema = lazy.require("tensorflow.lite.python.schema_py_generated")
    try:
        model = flatbuffer_utils.read_model(str(path))
    except Exception as exc:  # flatbuffers raises on anything that is not a model
        raise ParityError(f"--port {path}: not a TFLite model ({exc})") from None
    codes = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    issues: dict[str, list[str]] = {rule: [] for rule in RULES}
    checked = 0
    for graph in model.subgraphs:
        for index, op in enumerate(graph.operators):
            code = model.operatorCodes[op.opcodeIndex]
            kind = codes.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
            options = op.builtinOptions
            name = f"op {index} ({kind})"
            if kind in ("CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "AVERAGE_POOL_2D"):
                checked += 1
                strided = max(options.strideW, options.strideH) > 1
                window = max(
                    getattr(options, "filterWidth", 0) or _kernel(graph, op),
                    getattr(options, "filterHeight", 0) or _kernel(graph, op),
                )
                same = options.padding == schema.Padding.SAME
                if strided and same and window > 1:
                    issues["stride2_same_padding"].append(name)
                if kind == "AVERAGE_POOL_2D" and same and window > 1:
                    issues["avgpool_excludes_padding"].append(name)
            elif kind in ("RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR"):
                checked += 1
                if options.alignCorners or not options.halfPixelCenters:
                    issues["align_corners_resize"].append(name)
    return issues, checked


def _kernel(graph: Any, op: Any) -> int:
    """Spatial size of a convolution's kernel (weights are OHWI / 1HWO in TFLite)."""
    shape = list(graph.tensors[op.inputs[1]].shape)
    return int(max(shape[1:3])) if len(shape) == 4 else 1
