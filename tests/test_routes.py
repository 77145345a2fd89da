"""The route comparison table, from a report dict (no framework)."""

from __future__ import annotations

import json
from pathlib import Path

from parity.render.routes import render_routes_json, render_routes_markdown, route_of, route_rows

DATA = Path(__file__).parent / "data"


def test_one_row_per_live_check_with_its_route_and_numbers():
    (model,) = json.loads((DATA / "gate_pass.json").read_text())["models"]
    rows = {row["variant"]: row for row in route_rows(model)}
    live = [v["name"] for v in model["variants"] if v["mode"] == "live"]
    assert list(rows) == live and "torch" not in rows  # the golden check of torch is no route
    dynamo = rows["ort_dynamo"]
    assert dynamo["route"] == "torch.onnx (dynamo)" and dynamo["status"] == "pass"
    assert dynamo["megabytes"] > 1 and dynamo["convert_seconds"] > 0
    assert dynamo["top1_agreement"] == 1.0 and dynamo["logits_sqnr_db"] > 60
    assert dynamo["worst"].split(" ")[0] in {t["name"] for t in model["variants"][1]["taps"]}
    markdown = render_routes_markdown(model)
    assert markdown.count("\n| ") == len(rows) + 1 and "torch.onnx (TorchScript)" in markdown
    assert json.loads(render_routes_json(model))["routes"][0]["variant"] == live[0]


def test_route_of_a_file_made_elsewhere_and_of_the_new_routes():
    assert route_of({"artifact": {"exporter": "made elsewhere", "path": "/a/b/m.tflite"}}) == (
        "your file (m.tflite)"
    )
    assert route_of({"artifact": {"exporter_name": "litert_torch_int8"}}).startswith("litert-torch")
    assert route_of({"artifact": {"exporter_name": "onnx2tf_fp16"}}).endswith("+ onnx2tf")
    assert route_of({"artifact": {"exporter_name": "tflite_int8_io"}}) == (
        "Keras twin + TFLite converter"
    )
    assert route_of({"artifact": None}) == "torch (no export)"
