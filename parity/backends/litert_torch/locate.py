"""Where the card's taps are in a litert-torch file: by module path, then by shape and order.

litert-torch names each TFLite tensor after the torch modules its op came from (the fx
node's ``nn_module_stack``), ``;``-joined when ops were fused, the last module first::

    torchvision.models.mobilenetv2.MobileNetV2/torch.nn.modules.container.Sequential_features/
    torchvision.ops.misc.Conv2dNormActivation_0/torch.nn.modules.activation.ReLU6_2;...

so a module's **scope** is its class path and attribute name at every level from the root
(:func:`module_scopes`, built from the module itself). A tensor belongs to the module whose
scope is its name's first segment, or is inside it. The **output** of a module is its one
tensor computed at run time that an op outside the module reads (or the graph returns);
its **input** is the one tensor from outside that its ops read. A module whose ops were
renamed (the model output) or fused into a neighbour has no such tensor: those taps are
located by parity's shape-and-graph-order rules (:func:`parity.tapmatch.match_taps`, the
module-path matches as anchors), and the file's metadata says how each tap was located.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity.detect import GraphTensor, detect, format_shape, short_key
from parity.preprocess import Layout, to_layout
from parity.tapmatch import TapMapEntry, TapMatch, match_summary, match_taps
from parity.taps import Tap

#: How a tap located by its module's scope is reported.
MODULE_PATH = "module path"


def _class_name(cls: type) -> str:
    """A class as litert-torch writes it in a scope (builtins without their module)."""
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def module_scopes(module: Any) -> dict[str, str]:
    """Module path -> its scope in litert-torch tensor names (``""``: the root)."""
    scopes = {"": _class_name(type(module))}
    for name, child in module.named_modules():
        if name:
            parent, _, attr = name.rpartition(".")
            scopes[name] = f"{scopes[parent]}/{_class_name(type(child))}_{attr}"
    return scopes


def by_scope(
    ops: Sequence[Mapping[str, Any]],
    names: Mapping[int, str],
    graph_inputs: set[int],
    graph_outputs: set[int],
    taps: Sequence[Tap],
    scopes: Mapping[str, str],
) -> tuple[dict[str, int], dict[str, str]]:
    """(tap -> tensor index, tap -> why not) for the taps the scopes locate."""
    produced = {int(t) for op in ops for t in op["outputs"]}
    constant = {t for t in names if t not in produced and t not in graph_inputs}
    owner: dict[int, str] = {}  # tensor -> scope of the op that computes it
    reads: list[tuple[str, list[int]]] = []
    readers: dict[int, list[str]] = defaultdict(list)
    for op in ops:  # in execution order
        inputs = [int(t) for t in op["inputs"] if t >= 0]
        outputs = [int(t) for t in op["outputs"] if t >= 0]
        if inputs and all(t in constant for t in inputs):  # weight preparation
            constant.update(outputs)
            continue
        scope = names.get(outputs[0], "").split(";", 1)[0] if outputs else ""
        owner.update((t, scope) for t in outputs)
        reads.append((scope, [t for t in inputs if t not in constant]))
        for t in inputs:
            readers[t].append(scope)
    located: dict[str, int] = {}
    misses: dict[str, str] = {}
    for tap in taps:
        if tap.is_logits:
            continue
        root = scopes.get(tap.module)
        if root is None:
            misses[tap.name] = f"no module '{tap.module}' in the torch model"
            continue

        def inside(other: str, root: str = root) -> bool:
            return other == root or other.startswith(root + "/")

        if tap.point == "output":
            found = sorted(
                t for t, s in owner.items()
                if inside(s) and (t in graph_outputs or any(not inside(r) for r in readers[t]))
            )  # fmt: skip
        else:
            found = sorted(
                {
                    t
                    for s, inputs in reads
                    if inside(s)
                    for t in inputs
                    if not inside(owner.get(t, ""))
                }
            )
        if len(found) == 1:
            located[tap.name] = found[0]
        else:
            count = f"{len(found)} tensors" if found else "no tensor"
            m = tap.module
            where = (
                f"of module '{m}' read outside it"
                if tap.point == "output"
                else (f"read by module '{m}' from outside it")
            )
            misses[tap.name] = f"{count} {where}, by the scopes in the tensor names"
    return located, misses


def _squeeze(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _layout(reference: tuple[int, ...], shape: tuple[int, ...]) -> tuple[bool, Layout | None]:
    """(whether ``shape``, batch 1, is the reference tap's, in which layout)."""
    per_image = shape[1:]
    if len(reference) != 3:
        return per_image == reference, None
    c, h, w = reference
    if per_image == (h, w, c):
        return True, "NHWC"  # what TFLite computes in; checked first for square C == H == W
    return per_image == (c, h, w), "NCHW"


def locate(
    path: Path,
    card: Any,
    image: np.ndarray,
    reference: Mapping[str, np.ndarray],
    scopes: Mapping[str, str],
) -> tuple[dict[str, Any], list[TapMatch], list[str]]:
    """Locate ``card``'s taps in the file: (runner options, how each tap was located, lines).

    ``image``: one NCHW float32 image; ``reference``: the torch taps on it.
    """
    from parity.backends.litert.probe import LiteProbe

    probe = LiteProbe(path, 1)
    probe.load()
    detection = detect(probe, card, "TFLite made by litert-torch")
    feed = to_layout(image, "NCHW", detection.layout)
    _, tensors, keys = probe.discover(feed, detection.output.name)
    interpreter = probe.interpreter
    names = {i: str(d["name"]) for i, d in probe.details.items()}
    graph_inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    graph_outputs = {int(d["index"]) for d in interpreter.get_output_details()}
    found, misses = by_scope(probe.ops, names, graph_inputs, graph_outputs, card.taps, scopes)
    by_key = {t.key: t for t in tensors}
    anchors: dict[str, TapMapEntry] = {}
    squeezed: dict[str, TapMatch] = {}  # (1,512,1,1) in torch, (1,512) in the file
    for tap, index in found.items():
        tensor = by_key.get(probe.keys[index])
        shape = tuple(reference[tap].shape[1:])
        fits, layout = _layout(shape, tensor.shape) if tensor else (False, None)
        if fits:
            anchors[tap] = TapMapEntry(probe.keys[index], layout)
        elif tensor and _squeeze(tensor.shape) == _squeeze((1, *shape)):
            squeezed[tap] = TapMatch(
                tap, MODULE_PATH, tensor.key, None,
                f"'{short_key(tensor.key)}' ({tensor.op}): named after the tap's module; shape "
                f"{format_shape(tensor.shape)}, the tap's without its axes of size 1",
            )  # fmt: skip
        else:
            misses[tap] = "the tensor named after its module does not have the tap's shape"
    rest = [t for t in card.taps if t.name not in squeezed]
    located = {
        m.tap: _relabel(m, anchors, by_key, card.taps)
        for m in match_taps(
            rest, reference, tensors, keys, anchors, lambda tap: None,
            probe.native_layout, detection.output.name, "the first calibration image",
        )
    }  # fmt: skip
    matches = [located.get(t.name) or squeezed[t.name] for t in card.taps]
    tensors_of: dict[str, int] = {}
    layouts: dict[str, Layout | None] = {}
    unlocated: dict[str, str] = {}
    for m in matches:
        if m.tensor is None:
            unlocated[m.tap] = m.evidence
        else:
            tensors_of[m.tap] = probe.index(m.tensor)
            layouts[m.tap] = m.layout
    lines = [match_summary(matches)]
    lines += [f"  {m.tap}: {m.how}: {m.evidence}" for m in matches if m.how != MODULE_PATH]
    lines += [f"  {tap}: not by module path: {why}" for tap, why in misses.items()]
    options = {
        "tap_tensors": tensors_of,
        "tap_shapes": {tap: list(reference[tap].shape[1:]) for tap in squeezed},
        "tap_layouts": layouts,
        "unlocated": unlocated,
        "input_layout": detection.layout,
    }
    return options, matches, lines


def _relabel(
    match: TapMatch, anchors: Mapping[str, TapMapEntry], by_key: Mapping[str, GraphTensor],
    taps: Sequence[Tap],
) -> TapMatch:  # fmt: skip
    """An anchor's match says it was located by its module's scope."""
    if match.how != "explicit" or match.tap not in anchors:
        return match
    tap = next(t for t in taps if t.name == match.tap)
    tensor = by_key[anchors[match.tap].tensor]
    return TapMatch(
        match.tap,
        MODULE_PATH,
        match.tensor,
        match.layout,
        f"'{short_key(tensor.key)}' ({tensor.op}): the {tap.point} of module '{tap.module}' by "
        "its scope in the tensor names",
    )
