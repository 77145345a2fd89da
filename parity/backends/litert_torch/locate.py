"""Where the card's taps are in a litert-torch file: by module path, then by shape and order.

The module paths in the file's tensor names locate most taps
(:mod:`parity.backends.litert.scopes`); the others (the renamed model output, a module
fused into a neighbour, the input of a module) are located by parity's shape-and-order
rules (:func:`parity.tapmatch.match_taps`) with those matches as anchors. Both run once on
the first calibration image when the file is made; the file's metadata records, per tap,
the tensor and how it was found.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from parity.backends.litert.scopes import MODULE_PATH, anchors, relabel
from parity.detect import detect
from parity.preprocess import Layout, to_layout
from parity.tapmatch import TapMatch, match_summary, match_taps


def locate(
    path: Path, card: Any, image: np.ndarray, reference: Mapping[str, np.ndarray]
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
    shapes = {t.name: tuple(reference[t.name].shape[1:]) for t in card.taps}
    entries, squeezed, misses = anchors(probe.interpreter, probe.keys, tensors, card.taps, shapes)
    rest = [t for t in card.taps if t.name not in squeezed]
    located = {
        m.tap: relabel(m, entries, tensors, card.taps)
        for m in match_taps(
            rest, reference, tensors, keys, entries, lambda tap: None,
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
        "tap_layouts": layouts,
        "tap_shapes": {tap: list(shapes[tap]) for tap in squeezed},
        "unlocated": unlocated,
        "input_layout": detection.layout,
    }
    return options, matches, lines
