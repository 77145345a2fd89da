"""The route comparison table, from a report dict (no framework)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parity.render.overlay import OVER_BUDGET, TFLITE_GRAPH, node_data
from parity.render.routes import (
    render_routes_html,
    render_routes_json,
    render_routes_markdown,
    route_of,
    route_rows,
)
from parity.report import merge_gates, report_to_dict, write_reports
from parity.variants import VARIANTS

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
    assert route_of({"artifact": {"exporter_name": "executorch_xnnpack"}}).endswith("ExecuTorch")


ROUTES = DATA / "routes"


def shipped_gate() -> dict:
    """A real `parity check` of the tinynet card (tests/data/tinynet) in a scratch project:
    litert_torch_fp32 and two shipped copies of its file, one with the conv inside 'block'
    scaled by 1% (bench/routes_scratch.md); each live and vs the goldens."""
    return json.loads((ROUTES / "gate_tiny_shipped.json").read_text())


def test_route_table_as_a_self_contained_html_page():
    (model,) = json.loads((DATA / "gate_pass.json").read_text())["models"]
    page = render_routes_html(model)
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "<script" not in page and "http" not in page  # nothing fetched when opened
    rows = route_rows(model)
    assert page.count("<tr>") == len(rows) + 1  # header + one per route, all passing
    assert "torch.onnx (TorchScript)" in page and "&#10003; PASS" in page
    assert page.count('class="muted">-</td>') == len(rows)  # ONNX files: no overlay
    broken = shipped_gate()["models"][2]
    page = render_routes_html(broken)
    assert '<tr class="row-fail">' in page and "your file (tiny_broken.tflite)" in page
    assert '<a href="tiny-tiny_broken.tflite.modelexplorer.json">' in page


def load_node_data(path: Path) -> dict:
    """The overlay file read back with Model Explorer's own data classes (strict: a key
    they do not know fails), as {graph id: GraphNodeData}."""
    from dacite import Config, from_dict
    from model_explorer.node_data_builder import GraphNodeData, ModelNodeData

    raw = json.loads(path.read_text())
    graphs = {k: from_dict(GraphNodeData, v, Config(strict=True)) for k, v in raw.items()}
    json.loads(ModelNodeData(graphsData=graphs).to_json_string())  # and written back
    return graphs


def test_overlays_load_with_model_explorer_and_light_the_converted_graphs_nodes(
    tmp_path: Path,
):
    gate = shipped_gate()
    paths = write_reports(gate, tmp_path)
    overlays = sorted(p.name for p in paths if p.name.endswith(".modelexplorer.json"))
    assert overlays == [
        "tiny-litert_torch_fp32.modelexplorer.json",
        "tiny-tiny.tflite.modelexplorer.json",
        "tiny-tiny_broken.tflite.modelexplorer.json",
    ]  # one per live check of a TFLite file; golden checks are the same files
    outputs = graph_outputs(ROUTES / "tiny.tflite")  # the converted graph's nodes
    broken = load_node_data(tmp_path / overlays[2])
    assert list(broken) == [TFLITE_GRAPH]
    results = broken["main"].results
    ops = [outputs[key] for key in results]  # every key is an op's output in the graph
    assert ops == ["conv_2d", "depthwise_conv_2d", "conv_2d", "add", "mean", "fully_connected"]
    variant = gate["models"][2]["variants"][0]
    tensors = {m["tap"]: m["tensor"] for m in variant["artifact"]["tap_matching"]}
    metrics = {t["name"]: t["metrics"]["max_abs_norm"] for t in variant["taps"]}
    red = [k for k, r in results.items() if r.bgColor == OVER_BUDGET["bgColor"]]
    assert red[0] == tensors["block"] == tensors[variant["first_divergent_tap"]]
    assert results[tensors["block"]].value == metrics["block"] > 10 * metrics["block.conv1"]
    assert tensors["stem"] not in red and tensors["block.conv1"] not in red
    passing = load_node_data(tmp_path / overlays[1])["main"].results
    assert set(passing) == set(results) and not any(r.bgColor for r in passing.values())


def test_no_overlay_where_no_tensor_is_known_per_tap():
    (model,) = json.loads((DATA / "gate_pass.json").read_text())["models"]
    assert [node_data(model["model"], v) for v in model["variants"]] == [None] * 9  # ONNX
    variant = shipped_gate()["models"][1]["variants"][1]
    assert variant["mode"] == "golden" and node_data("tiny", variant) is None


def test_merged_reports_keep_every_shipped_file():
    """pytest-xdist and the plugin merge reports by model: two shipped files of one model
    are both 'external_litert' and must both stay."""
    gate = shipped_gate()
    (model,) = merge_gates([gate])["models"]
    names = [(v["name"], v["mode"]) for v in model["variants"]]
    assert len(names) == 7 and names.count(("external_litert", "live")) == 2


def graph_outputs(path: Path) -> dict[str, str]:
    """Output tensor name -> op, of every node of the graph Model Explorer's own TFLite
    adapter reads from ``path`` (graph 'main')."""
    from model_explorer.builtin_tflite_flatbuffer_adapter import BuiltinTfliteFlatbufferAdapter

    (collection,) = BuiltinTfliteFlatbufferAdapter().convert(str(path), {})["graphCollections"]
    (graph,) = collection.graphs
    assert graph["id"] == TFLITE_GRAPH
    return {
        attr["value"]: node["label"]
        for node in graph["nodes"]
        for meta in node.get("outputsMetadata") or ()
        for attr in meta["attrs"]
        if attr["key"] == "tensor_name"
    }


@pytest.mark.litert
@pytest.mark.keras
@pytest.mark.torch
def test_a_built_tflite_variant_records_its_tensors_and_gets_an_overlay(session_for):
    """The Keras twin's TFLite file (the LiteRT runner locates taps by layer name): the
    report records the tensor of every tap, and the overlay lights those nodes."""
    session = session_for("mobilenet_v2")
    result = session.check(VARIANTS["litert_fp32"])
    (variant,) = report_to_dict(session.report([result], started=0.0))["variants"]
    assert set(variant["tensors"]) == {t.name for t in session.card.taps}
    data = node_data("mobilenet_v2", variant)
    assert data is not None
    outputs = graph_outputs(Path(variant["artifact"]["path"]))
    keys = data[TFLITE_GRAPH]["results"]
    assert keys and all(key in outputs for key in keys), set(keys) - set(outputs)
    assert {outputs[key] for key in keys} >= {"conv_2d", "add", "fully_connected"}
