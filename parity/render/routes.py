"""The route comparison: for one model, which conversion should we ship?

One row per live check of a run (the dict of :func:`parity.report.report_to_dict`): the
route that made its file (:data:`ROUTES`, by the exporter recorded in the artifact), the
variant, the verdict, the first divergent and the worst tap, the logits' SQNR and top-1
agreement, the file's size, the conversion time (the last step of the route: a quantised
file's recipe, not the fp32 conversion before it), the check's run time and, where the
graph can be drawn, its Model Explorer overlay (:mod:`parity.render.overlay`). The same
rows as a terminal table (:func:`parity.report.routes_table`), Markdown, JSON and HTML.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Mapping
from typing import Any

from parity.render.html import badge, page
from parity.render.overlay import node_data, overlay_name
from parity.render.plot import esc

#: The exporter that made a file -> the route it belongs to (first match wins).
ROUTES = {
    "onnx_dynamo": "torch.onnx (dynamo)",
    "onnx_torchscript": "torch.onnx (TorchScript)",
    "openvino_*": "torch.onnx (dynamo) + OpenVINO",
    "keras": "Keras twin",
    "tf2onnx": "Keras twin + tf2onnx",
    "tflite_*": "Keras twin + TFLite converter",
    "litert_torch_*": "litert-torch (+ AI Edge Quantizer)",
    "onnx2tf_*": "torch.onnx (TorchScript) + onnx2tf",
    "executorch_*": "torch.export + ExecuTorch",
}
COLUMNS = (
    ("route", "route"),
    ("variant", "variant"),
    ("verdict", "status"),
    ("first divergent tap", "first_divergent_tap"),
    ("worst tap (max_abs_norm)", "worst"),
    ("logits SQNR dB", "logits_sqnr_db"),
    ("top-1", "top1_agreement"),
    ("MB", "megabytes"),
    ("convert s", "convert_seconds"),
    ("run s", "run_seconds"),
)

NUMERIC = {"logits_sqnr_db", "top1_agreement", "megabytes", "convert_seconds", "run_seconds"}


def route_of(variant: Mapping[str, Any]) -> str:
    """The route of a checked variant, from the exporter recorded in its artifact."""
    artifact = variant.get("artifact") or {}
    exporter = str(artifact.get("exporter_name") or "")
    if artifact.get("exporter") == "made elsewhere":
        return f"your file ({str(artifact.get('path', '')).rpartition('/')[2]})"
    if not exporter:
        return "torch (no export)"
    return next((r for glob, r in ROUTES.items() if fnmatch.fnmatch(exporter, glob)), exporter)


def route_rows(model: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per live check that ran (n/a rows and golden checks are not routes)."""
    rows = []
    for variant in model["variants"]:
        status = variant.get("status") or (
            "error" if variant.get("error") else "pass" if variant.get("passed") else "fail"
        )  # reports written before 'status' existed
        if variant["mode"] != "live" or status == "n/a":
            continue
        artifact = variant.get("artifact") or {}
        taps = variant.get("taps") or []
        worst = max(taps, key=lambda t: float(t["metrics"]["max_abs_norm"]), default=None)
        logits = next((t for t in taps if t.get("role") == "logits"), None)
        rows.append(
            {
                "route": route_of(variant),
                "variant": variant["name"],
                "status": status,
                "first_divergent_tap": variant.get("first_divergent_tap") or variant.get("error"),
                "worst": None
                if worst is None
                else f"{worst['name']} ({float(worst['metrics']['max_abs_norm']):.3g})",
                "logits_sqnr_db": None if logits is None else logits["metrics"]["sqnr_db"],
                "top1_agreement": None if logits is None else logits["metrics"]["top1_agreement"],
                "megabytes": round(artifact["bytes"] / 1e6, 2) if "bytes" in artifact else None,
                "convert_seconds": artifact.get("export_seconds"),
                "run_seconds": variant["seconds"],
                "overlay": overlay_name(model["model"], variant)
                if node_data(model["model"], variant) is not None
                else None,
            }
        )
    return rows


def format_cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def render_routes_markdown(model: Mapping[str, Any]) -> str:
    """The route table of one model as Markdown."""
    lines = [
        f"## Routes for {model['model']}",
        "",
        "| " + " | ".join(title for title, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in route_rows(model):
        lines.append("| " + " | ".join(format_cell(row[key]) for _, key in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def render_routes_json(model: Mapping[str, Any]) -> str:
    return json.dumps({"model": model["model"], "routes": route_rows(model)}, indent=2) + "\n"


def render_routes_html(model: Mapping[str, Any]) -> str:
    """The route table of one model as a self-contained page (the report's style); each
    row links its Model Explorer overlay, written beside it."""
    head = "".join(
        f'<th class="num">{esc(t)}</th>' if k in NUMERIC else f"<th>{esc(t)}</th>"
        for t, k in COLUMNS
    )
    rows = []
    for row in route_rows(model):
        cells = []
        for _, key in COLUMNS:
            value = row[key]
            if key == "status":
                cells.append(f"<td>{badge(value)}</td>")
            elif key in NUMERIC:
                cells.append(f'<td class="num">{esc(format_cell(value))}</td>')
            else:
                cells.append(f"<td>{esc(format_cell(value))}</td>")
        overlay = row["overlay"]
        cells.append(
            f'<td><a href="{esc(overlay)}">{esc(overlay)}</a></td>'
            if overlay
            else '<td class="muted">-</td>'
        )
        cls = "" if row["status"] == "pass" else ' class="row-fail"'
        rows.append(f"<tr{cls}>{''.join(cells)}</tr>")
    name = esc(model["model"])
    body = [
        '<header class="verdict"><div class="wrap">',
        f"<h1>Routes for {name}</h1>",
        "<p>Which conversion should we ship? One row per route checked against torch on the "
        "fixture images, tap by tap in forward order.</p>",
        "</div></header>",
        '<main class="wrap"><div class="scroll"><table class="summary">',
        f"<thead><tr>{head}<th>Model Explorer overlay</th></tr></thead>",
        f"<tbody>{''.join(rows)}</tbody>",
        "</table></div></main>",
        '<footer class="wrap">Generated by parity from the run\'s report. worst tap: the tap '
        "with the largest max_abs_norm (max |&Delta;| / max |reference|, worst image); convert "
        "s: the route's last conversion step; overlay: <code>model-explorer FILE.tflite "
        "--node_data_paths=OVERLAY</code> colours each tap's node by its error (red: over "
        "budget).</footer>",
    ]
    return page(f"Routes for {model['model']}", body)
