"""Where the card's taps are in a litert-torch file: by module path, then by shape and order.

The module paths in the file's tensor names locate most taps
(:mod:`parity.backends.litert.scopes`); the others (the renamed model output, a module
fused into a neighbour, the input of a module) are located by parity's shape-and-order
rules (:func:`parity.tapmatch.match_taps`) with those matches as anchors. Both run once on
the first calibration image when the file is made; the file's metadata records, per tap,
the tensor and how it was found.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from parity.backends.litert.scopes import MODULE_PATH, anchors, relabel
from parity.detect import GraphTensor, detect, format_shape, short_key
from parity.preprocess import Layout, to_layout
from parity.runner import OUTPUT
from parity.tapmatch import CLEAR_MARGIN, TapMapEntry, TapMatch, match_summary, match_taps

if TYPE_CHECKING:
    from parity.backends import ExportContext


def locate(
    path: Path,
    card: Any,
    image: np.ndarray,
    reference: Mapping[str, np.ndarray],
    what: str = "TFLite made by litert-torch",
    budget: Callable[[str], float | None] = lambda tap: None,
    explicit: Mapping[str, tuple[TapMapEntry, str]] | None = None,
    module_paths: bool = True,
) -> tuple[dict[str, Any], list[TapMatch], list[str]]:
    """Locate ``card``'s taps in the file: (runner options, how each tap was located, lines).

    ``image``: one NCHW float32 image; ``reference``: the torch taps on it; ``what``: the
    file's maker, for the detection's report; ``budget``: a tap's max_abs_norm budget, to
    tell candidates of one shape apart by value; ``explicit``: taps already known by
    tensor name, with how they were found (its evidence); ``module_paths``: whether the
    file's tensor names may carry torch module paths (litert-torch's do).
    """
    from parity.backends.litert.probe import LiteProbe

    probe = LiteProbe(path, 1)
    probe.load()
    detection = detect(probe, card, what)
    feed = to_layout(image, "NCHW", detection.layout)
    _, tensors, keys = probe.discover(feed, detection.output.name)
    shapes = {t.name: tuple(reference[t.name].shape[1:]) for t in card.taps}
    entries, squeezed, misses = (
        anchors(probe.interpreter, probe.keys, tensors, card.taps, shapes)
        if module_paths
        else ({}, {}, {})
    )
    rest = [t for t in card.taps if t.name not in squeezed]
    located = {
        m.tap: relabel(m, entries, tensors, card.taps)
        for m in match_taps(
            rest, reference, tensors, keys,
            {**entries, **{tap: entry for tap, (entry, _) in (explicit or {}).items()}}, budget,
            probe.native_layout, detection.output.name, "the first calibration image",
        )
    }  # fmt: skip
    for tap, (_, why) in (explicit or {}).items():
        if located[tap].how == "explicit":
            evidence = located[tap].evidence.removeprefix("tap map -> ")
            located[tap] = dataclasses.replace(located[tap], evidence=f"{why}: {evidence}")
    matches = [located.get(t.name) or squeezed[t.name] for t in card.taps]
    for i, m in enumerate(matches):
        if m.tensor is None and (alone := _squeezed(m.tap, shapes[m.tap], tensors)) is not None:
            matches[i] = squeezed[m.tap] = alone
        elif m.tensor is None and (limit := budget(m.tap)) is not None:
            matches[i] = _by_value(m, reference[m.tap][:1], tensors, limit) or m
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
        "tap_layouts": layouts,
        "tap_shapes": {tap: list(shapes[tap]) for tap in squeezed},
        "unlocated": unlocated,
        "input_layout": detection.layout,
    }
    return options, matches, lines


def located(
    ctx: ExportContext,
    path: Path,
    label: str,
    what: str = "TFLite made by litert-torch",
    budget: Callable[[str], float | None] = lambda tap: None,
    explicit: Mapping[str, tuple[TapMapEntry, str]] | None = None,
    module_paths: bool = True,
) -> dict[str, Any]:
    """The metadata saying where the card's taps are in ``path`` and how each was found
    (run in the torch worker: the reference taps come from the module on the first
    calibration image); the options as for :func:`locate`."""
    from parity.backends.torch.runner import TorchRunner

    module = ctx.model().module
    image = ctx.calibration_batch()[:1]
    with TorchRunner("torch", module) as runner:
        reference = runner.run(image, ctx.card.taps)
    reference.pop(OUTPUT)
    runner_options, matches, lines = locate(
        path, ctx.card, image, reference, what, budget, explicit, module_paths
    )
    return {
        "runner_options": runner_options,
        "tap_matching": [m.to_dict() for m in matches],
        "tap_summary": lines[0],
        "notes": [f"{label}: {line}" for line in lines],
    }


def _squeezed(tap: str, shape: tuple[int, ...], tensors: Sequence[GraphTensor]) -> TapMatch | None:
    """The one main-path tensor whose shape is the tap's without its axes of size 1 (a
    pooled (1280,) the file keeps as (1, 1, 1, 1280) before its fully-connected op)."""
    want = tuple(d for d in (1, *shape) if d != 1)
    found = [t for t in tensors if t.main_path and tuple(d for d in t.shape if d != 1) == want]
    if len(found) != 1 or len(want) != 1:  # a vector only: no axes to reorder
        return None
    (tensor,) = found
    return TapMatch(
        tap, "shape-unique", tensor.key, None,
        f"'{short_key(tensor.key)}' ({tensor.op}): the only tensor on the main path with the "
        f"tap's shape without its axes of size 1 ({format_shape(tensor.shape)})",
    )  # fmt: skip


def _by_value(
    unmatched: TapMatch, reference: np.ndarray, tensors: Sequence[GraphTensor], limit: float
) -> TapMatch | None:
    """The one tensor anywhere in the graph (a residual branch included, where the order
    rules do not look) of the tap's shape within its max_abs_norm budget on the image,
    every other of that shape over 10x it; ``None`` when not exactly one."""
    scale = max(float(np.abs(reference).max()), float(np.finfo(np.float64).tiny))
    errors: list[tuple[float, GraphTensor, Layout | None]] = []
    for t in tensors:
        for layout in ("NCHW", "NHWC") if len(t.shape) == 4 else (None,):
            value = to_layout(t.value, layout, "NCHW") if layout else t.value
            if value.shape == reference.shape:
                error = float(np.abs(value.astype(np.float64) - reference).max()) / scale
                errors.append((error, t, layout))
    within = [i for i, e in enumerate(errors) if e[0] <= limit]
    others = [e[0] for i, e in enumerate(errors) if i not in within]
    if len(within) != 1 or any(error <= CLEAR_MARGIN * limit for error in others):
        return None
    error, tensor, layout = errors[within[0]]
    return TapMatch(
        unmatched.tap, "numeric", tensor.key, layout,
        f"'{short_key(tensor.key)}' ({tensor.op}{', ' + layout if layout else ''}): the only "
        f"tensor of the tap's shape within its max_abs_norm budget ({error:.2g} <= {limit:.0e})"
        f", the others over {CLEAR_MARGIN:g}x it (the order rules: {unmatched.evidence})",
    )  # fmt: skip
