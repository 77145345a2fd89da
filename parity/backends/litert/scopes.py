"""Taps by the torch module paths that litert-torch writes in TFLite tensor names.

litert-torch names each tensor after the torch modules its op came from (the fx node's
``nn_module_stack``), ``;``-joined when ops were fused, the last module first::

    torchvision.models.mobilenetv2.MobileNetV2/torch.nn.modules.container.Sequential_features/
    torchvision.ops.misc.Conv2dNormActivation_0/torch.nn.modules.activation.ReLU6_2;...

The first ``;``-segment is the op's **scope**: the root's class, then ``<class>_<attribute>``
for each module down the path. A tensor belongs to module ``features.0`` when its scope's
levels below the root end in ``_features`` and ``_0`` (the classes play no part, so a file
made elsewhere is read without its torch module). The **output** of a module is its one
tensor computed at run time that an op outside the module reads (or the graph returns);
its **input** is the one tensor from outside that its ops read. A module whose ops were
renamed (the model output) or fused into a neighbour has none: the shape-and-order rules
(:mod:`parity.tapmatch`) locate those taps, with the module-path matches as anchors.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from parity.backends.litert.internals import ops_details
from parity.detect import GraphTensor, format_shape, short_key
from parity.preprocess import Layout
from parity.tapmatch import TapMapEntry, TapMatch
from parity.taps import Tap

#: How a tap located by its module's scope is reported.
MODULE_PATH = "module path"


def inside(scope: str, module: str) -> bool:
    """Whether an op of ``scope`` runs inside the module at path ``module`` (``""``: root)."""
    levels = scope.split("/")[1:]
    attributes = module.split(".") if module else []
    return len(levels) >= len(attributes) and all(
        level.endswith(f"_{attribute}")
        for level, attribute in zip(levels, attributes, strict=False)
    )


def by_scope(
    ops: Sequence[Mapping[str, Any]],
    names: Mapping[int, str],
    graph_inputs: set[int],
    graph_outputs: set[int],
    taps: Sequence[Tap],
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
        m = tap.module
        if tap.point == "output":
            leaves = {t for t, rs in readers.items() if not all(inside(r, m) for r in rs)}
            found = sorted(
                t for t, s in owner.items() if inside(s, m) and t in leaves | graph_outputs
            )
        else:
            found = sorted(
                {
                    t
                    for s, ins in reads
                    if inside(s, m)
                    for t in ins
                    if not inside(owner.get(t, ""), m)
                }
            )
        if len(found) == 1:
            located[tap.name] = found[0]
        else:
            count = f"{len(found)} tensors" if found else "no tensor"
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


def anchors(
    interpreter: Any,
    keys: Mapping[int, str],
    tensors: Sequence[GraphTensor],
    taps: Sequence[Tap],
    shapes: Mapping[str, tuple[int, ...]],
) -> tuple[dict[str, TapMapEntry], dict[str, TapMatch], dict[str, str]]:
    """The taps located by module path: (tap-map entries for the taps whose tensor has the
    reference's shape, matches for those that have it without its axes of size 1, and why
    the others were not). ``keys``: tensor index -> key; ``shapes``: per-image tap shapes."""
    names = {int(d["index"]): str(d["name"]) for d in interpreter.get_tensor_details()}
    graph_inputs = {int(d["index"]) for d in interpreter.get_input_details()}
    graph_outputs = {int(d["index"]) for d in interpreter.get_output_details()}
    ops = ops_details(interpreter)
    found, misses = by_scope(ops, names, graph_inputs, graph_outputs, taps)
    by_key = {t.key: t for t in tensors}
    entries: dict[str, TapMapEntry] = {}
    squeezed: dict[str, TapMatch] = {}  # (1,512,1,1) in torch, (1,512) in the file
    for tap, index in found.items():
        tensor = by_key.get(keys[index])
        fits, layout = _layout(shapes[tap], tensor.shape) if tensor else (False, None)
        if tensor and fits:
            entries[tap] = TapMapEntry(tensor.key, layout)
        elif tensor and _squeeze(tensor.shape) == _squeeze((1, *shapes[tap])):
            squeezed[tap] = TapMatch(
                tap, MODULE_PATH, tensor.key, None,
                f"'{short_key(tensor.key)}' ({tensor.op}): named after the tap's module; shape "
                f"{format_shape(tensor.shape)}, the tap's without its axes of size 1",
            )  # fmt: skip
        else:
            misses[tap] = "the tensor named after its module does not have the tap's shape"
    return entries, squeezed, misses


def relabel(
    match: TapMatch,
    entries: Mapping[str, TapMapEntry],
    tensors: Sequence[GraphTensor],
    taps: Sequence[Tap],
) -> TapMatch:
    """A match the locator made from a module-path anchor says so."""
    if match.how != "explicit" or match.tap not in entries:
        return match
    tap = next(t for t in taps if t.name == match.tap)
    tensor = next(t for t in tensors if t.key == entries[match.tap].tensor)
    return TapMatch(
        match.tap,
        MODULE_PATH,
        match.tensor,
        match.layout,
        f"'{short_key(tensor.key)}' ({tensor.op}): the {tap.point} of module '{tap.module}' by "
        "its scope in the tensor names",
    )
