"""Model Explorer overlays: where on the converted graph the error grows.

Google's Model Explorer (``pip install ai-edge-model-explorer``) draws *node data* over a
model's graph: a JSON file of its ``ModelNodeData`` (``model_explorer.node_data_builder``),
graph id -> ``GraphNodeData`` (``results``: key -> ``{value, bgColor, textColor}``, plus a
colour ``gradient``), where a key is a node id or one of the node's output tensor names.

Parity writes one such file per live check whose report records the tensor each tap was
read from (``tensors``, from the runner: the LiteRT runners and files made elsewhere; older
reports: ``artifact.tap_matching``): that tensor's node gets the tap's worst
``max_abs_norm`` over the fixture images (the gradient colours the growth), a tap over its
budget is red. Only TFLite files are drawn:
Model Explorer's built-in TFLite adapter names the graph after subgraph 0 (``main``, as
both TFLite converters write it); other formats' graph ids are not known to the parent.
Open with ``model-explorer model.tflite --node_data_paths=overlay.json``. Standard library
only: the report dict in, JSON out.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from parity import atomic

#: The graph id of a TFLite file's subgraph 0 in Model Explorer's built-in adapter.
TFLITE_GRAPH = "main"
#: Light to dark over the observed range (Model Explorer's gradient: hex colours only).
GRADIENT = ({"stop": 0, "bgColor": "#fff7bc"}, {"stop": 1, "bgColor": "#f16913"})
OVER_BUDGET = {"bgColor": "#d32f2f", "textColor": "#ffffff"}


def overlay_name(model: str, variant: Mapping[str, Any]) -> str:
    """The overlay's file name: the model and the variant, or the file made elsewhere."""
    artifact = variant.get("artifact") or {}
    if artifact.get("exporter") == "made elsewhere":
        label = Path(str(artifact.get("path", "file"))).name
    else:
        label = str(variant["name"])
    return re.sub(r"[^\w.-]+", "_", f"{model}-{label}") + ".modelexplorer.json"


def node_data(model: str, variant: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``ModelNodeData`` dict of one live check, or ``None`` when it cannot be drawn
    (not a TFLite file, no tensor recorded per tap, nothing compared)."""
    artifact = variant.get("artifact") or {}
    if variant.get("mode") != "live" or not str(artifact.get("path", "")).endswith(".tflite"):
        return None
    tensors = variant.get("tensors") or {
        m["tap"]: m["tensor"] for m in artifact.get("tap_matching") or () if m.get("tensor")
    }
    results: dict[str, dict[str, Any]] = {}
    for tap in variant.get("taps") or ():
        tensor = tensors.get(tap["name"])
        value = tap["metrics"].get("max_abs_norm")
        if tensor is None or value is None:
            continue
        value = float(value)
        previous = results.get(tensor)
        if previous is not None and previous["value"] >= value:
            continue  # two taps on one tensor (logits = the model output): the worse one
        results[tensor] = {"value": value, **({} if tap["passed"] else OVER_BUDGET)}
    if not results:
        return None
    graph = {
        "name": f"{model} {variant['name']}: max_abs_norm vs torch (red: over budget)",
        "results": results,
        "gradient": list(GRADIENT),
    }
    return {TFLITE_GRAPH: graph}


def write_overlays(model: Mapping[str, Any], folder: Path) -> list[Path]:
    """Write the overlay of each drawable check of one model's report dict into ``folder``."""
    paths = []
    for variant in model["variants"]:
        data = node_data(str(model["model"]), variant)
        if data is not None:
            path = Path(folder) / overlay_name(str(model["model"]), variant)
            atomic.write_text(path, json.dumps(data, indent=1) + "\n")
            paths.append(path)
    return paths
