"""Locating the card's taps in a file made elsewhere: by a tap map, by shape and graph
order, and (as evidence only) by value. See :mod:`parity.external` for the rules.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from parity.detect import LAYOUTS, GraphTensor, format_shape, short_key
from parity.errors import ParityError, TapError
from parity.preprocess import Layout, to_layout
from parity.schema import Field, check, read_config, string, table
from parity.taps import Tap

#: Numeric tie-break: the other candidates must be this many times over the budget.
CLEAR_MARGIN = 10.0


@dataclasses.dataclass(frozen=True)
class TapMatch:
    """How one tap was located in the artifact (``tensor`` is None when unmatched)."""

    tap: str
    how: str
    tensor: str | None
    layout: Layout | None
    evidence: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TapMapEntry:
    tensor: str
    layout: Layout | None = None


_TAP_MAP_ENTRY = Field(
    either=(
        string(),
        table({"tensor": string(required=True), "layout": string(choices=LAYOUTS)}),
    )
)


def load_tap_map(path: Path, taps: Sequence[Tap]) -> dict[str, TapMapEntry]:
    """Read a tap map: TOML or JSON, ``tap = "tensor"`` or ``tap = {tensor, layout}``."""
    path = Path(path)
    data = read_config(path, "tap map")
    nested = "taps" in data
    entries_field = table({t.name: _TAP_MAP_ENTRY for t in taps})
    check(data["taps"] if nested else data, entries_field, path, "taps" if nested else "")
    if nested and len(data) > 1:
        raise ParityError(f"{path}: unknown table next to [taps]: {sorted(set(data) - {'taps'})}")
    entries = {}
    for tap, value in (data["taps"] if nested else data).items():
        if isinstance(value, str):
            entries[tap] = TapMapEntry(value)
        else:
            entries[tap] = TapMapEntry(value["tensor"], value.get("layout"))
    return entries


# -- matching --------------------------------------------------------------------------


def _tap_layout(reference: tuple[int, ...], tensor: tuple[int, ...]) -> list[Layout] | None:
    """Layouts in which ``tensor`` (batch 1) has the reference tap's per-image shape."""
    if not tensor or tensor[0] != 1:
        return None
    per_image = tensor[1:]
    if len(reference) != 3:
        return ["NCHW"] if per_image == reference else None
    c, h, w = reference
    fits: list[Layout] = []
    if per_image == (c, h, w):
        fits.append("NCHW")
    if per_image == (h, w, c):
        fits.append("NHWC")
    return fits or None


def _where(tensor: GraphTensor, layout: Layout | None) -> str:
    return f"'{short_key(tensor.key)}' ({tensor.op}{', ' + layout if layout else ''})"


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def match_taps(
    taps: Sequence[Tap],
    reference: Mapping[str, np.ndarray],
    tensors: Sequence[GraphTensor],
    keys: set[str],
    explicit: Mapping[str, TapMapEntry],
    budget: Callable[[str], float | None],
    native: Layout,
    output: str,
    image: str,
) -> list[TapMatch]:
    """Locate every tap in the artifact, or say why it cannot be (see the module doc)."""
    by_key = {t.key: t for t in tensors}
    shapes = {t.name: tuple(reference[t.name].shape[1:]) for t in taps}
    decided: dict[str, TapMatch] = {}
    anchors: dict[str, GraphTensor] = {}
    layouts: dict[str, dict[str, list[Layout]]] = {}
    for tap in taps:
        if tap.is_logits:
            if tap.name in explicit and explicit[tap.name].tensor != output:
                raise TapError(
                    f"tap map: tap '{tap.name}' is the logits, always read from the output "
                    f"'{output}'; it cannot be mapped to '{explicit[tap.name].tensor}'"
                )
            decided[tap.name] = TapMatch(
                tap.name, "final output", output, None, f"the model output '{short_key(output)}'"
            )
            continue
        layouts[tap.name] = {}
        for t in tensors:
            fits = _tap_layout(shapes[tap.name], t.shape)
            if fits:
                layouts[tap.name][t.key] = fits
        if tap.name in explicit:
            decided[tap.name] = _explicit(tap, explicit[tap.name], by_key, keys, shapes[tap.name])
            anchors[tap.name] = by_key[explicit[tap.name].tensor]

    order = [t.name for t in taps if not t.is_logits]
    candidates = {
        name: [t for t in tensors if t.main_path and t.key in layouts[name]] for name in order
    }
    dominant = _dominant_layout(layouts, native)

    def layout_of(name: str, key: str) -> Layout | None:
        fits = layouts[name][key]
        if len(by_key[key].shape) != 4:
            return None  # vectors have no layout
        return fits[0] if len(fits) == 1 else dominant

    def value_of(name: str, tensor: GraphTensor) -> np.ndarray:
        return to_layout(tensor.value, layout_of(name, tensor.key) or "NCHW", "NCHW")

    def neighbours(name: str) -> tuple[str, str]:
        index = order.index(name)
        before = [n for n in order[:index] if n in anchors]
        after = [n for n in order[index + 1 :] if n in anchors]
        return (
            f"'{before[-1]}' match" if before else "the input",
            f"'{after[0]}' match" if after else "the output",
        )

    unmatched: dict[str, str] = {}
    while True:
        lower, upper = _bounds(order, candidates, anchors)
        forced = False
        for name in order:
            if name in decided or name in unmatched:
                continue
            window = _window(candidates[name], lower[name], upper[name])
            if len(window) == 1:
                decided[name] = _order_match(
                    name,
                    window[0],
                    candidates,
                    anchors,
                    order,
                    shapes,
                    layout_of(name, window[0].key),
                )
                anchors[name] = window[0]
                forced = True
        if forced:
            continue
        pending = [n for n in order if n not in decided and n not in unmatched]
        if not pending:
            break
        name = pending[0]
        window = _window(candidates[name], lower[name], upper[name])
        shape = format_shape((1, *shapes[name]))
        before, after = neighbours(name)
        if not window:
            off_path = [t for t in tensors if t.key in layouts[name] and not t.main_path]
            if not candidates[name]:
                reason = f"no tensor of shape {shape} (NCHW or NHWC) on the graph's main path"
                if off_path:
                    reason += (
                        f" ({len(off_path)} inside branches, e.g. '{short_key(off_path[0].key)}')"
                    )
            else:
                reason = (
                    f"no tensor of shape {shape} left between {before} and {after} in graph order"
                )
            unmatched[name] = reason
            continue
        match = _numeric(
            name,
            window,
            value_of,
            reference[name][:1],
            budget(name),
            shape,
            before,
            after,
            image,
            layout_of,
        )
        if isinstance(match, TapMatch):
            decided[name] = match
            anchors[name] = by_key[cast(str, match.tensor)]
        else:
            unmatched[name] = match
    for name, reason in unmatched.items():
        decided[name] = TapMatch(name, "unmatched", None, None, reason)
    return [decided[t.name] for t in taps]


def _explicit(
    tap: Tap,
    entry: TapMapEntry,
    by_key: Mapping[str, GraphTensor],
    keys: set[str],
    reference: tuple[int, ...],
) -> TapMatch:
    tensor = by_key.get(entry.tensor)
    if tensor is None:
        what = "not a float tensor computed at run time" if entry.tensor in keys else "no tensor"
        raise TapError(f"tap map: tap '{tap.name}' -> '{entry.tensor}': {what} in the artifact")
    fits = _tap_layout(reference, tensor.shape) or []
    if entry.layout is not None and entry.layout not in fits or not fits:
        raise TapError(
            f"tap map: tap '{tap.name}' -> '{entry.tensor}' has shape "
            f"{format_shape(tensor.shape)}, the reference tap is {format_shape((1, *reference))} "
            f"NCHW{' (layout ' + entry.layout + ' given)' if entry.layout else ''}"
        )
    if entry.layout is None and len(fits) > 1:
        raise TapError(
            f"tap map: tap '{tap.name}' -> '{entry.tensor}' {format_shape(tensor.shape)} fits "
            'NCHW and NHWC; give its layout: {tensor = ..., layout = "NHWC"}'
        )
    layout = entry.layout or fits[0]
    given = "given" if entry.layout else "from its shape"
    return TapMatch(
        tap.name,
        "explicit",
        entry.tensor,
        layout,
        f"tap map -> '{short_key(entry.tensor)}' ({tensor.op}), layout {layout} {given}",
    )


def _dominant_layout(layouts: Mapping[str, Mapping[str, list[Layout]]], native: Layout) -> Layout:
    counts = Counter(f[0] for per_tap in layouts.values() for f in per_tap.values() if len(f) == 1)
    return counts.most_common(1)[0][0] if counts else native


def _bounds(
    order: Sequence[str],
    candidates: Mapping[str, Sequence[GraphTensor]],
    anchors: Mapping[str, GraphTensor],
) -> tuple[dict[str, int | None], dict[str, int | None]]:
    """Earliest and latest position each tap can take in an in-order assignment."""
    lower: dict[str, int | None] = {}
    upper: dict[str, int | None] = {}
    position = -2
    for name in order:
        if name in anchors:
            position = lower[name] = anchors[name].position
            continue
        after = [t.position for t in candidates[name] if t.position > position]
        lower[name] = after[0] if after else None
        position = after[0] if after else position
    position = 1 << 60
    for name in reversed(order):
        if name in anchors:
            position = upper[name] = anchors[name].position
            continue
        before = [t.position for t in candidates[name] if t.position < position]
        upper[name] = before[-1] if before else None
        position = before[-1] if before else position
    return lower, upper


def _window(
    candidates: Sequence[GraphTensor], low: int | None, high: int | None
) -> list[GraphTensor]:
    if low is None or high is None:
        return []
    return [t for t in candidates if low <= t.position <= high]


def _order_match(
    name: str,
    tensor: GraphTensor,
    candidates: Mapping[str, Sequence[GraphTensor]],
    anchors: Mapping[str, GraphTensor],
    order: Sequence[str],
    shapes: Mapping[str, tuple[int, ...]],
    layout: Layout | None,
) -> TapMatch:
    index = order.index(name)
    before = [n for n in order[:index] if n in anchors]
    start = anchors[before[-1]].position if before else -2
    after_previous = [t for t in candidates[name] if t.position > start]
    shape = format_shape(tensor.shape)
    previous = f"'{before[-1]}' match" if before else "the input"
    where = _where(tensor, layout)
    if len(after_previous) == 1:
        return TapMatch(
            name,
            "shape-unique",
            tensor.key,
            layout,
            f"{where}: only tensor of shape {shape} on the main path after {previous}",
        )
    rank = after_previous.index(tensor) + 1
    others = [
        n
        for n in order[index + 1 :]
        if shapes[n] == shapes[name] and any(t in after_previous for t in candidates[n])
    ]
    return TapMatch(
        name,
        "shape-order",
        tensor.key,
        layout,
        f"{where}: {len(after_previous)} tensors of shape {shape} on the main path after "
        f"{previous}; graph order forces the {_ordinal(rank)} (the later ones belong to "
        f"{', '.join(others) or 'later taps'})",
    )


def _numeric(
    name: str,
    window: Sequence[GraphTensor],
    value_of: Callable[[str, GraphTensor], np.ndarray],
    reference: np.ndarray,
    limit: float | None,
    shape: str,
    before: str,
    after: str,
    image: str,
    layout_of: Callable[[str, str], Layout | None],
) -> TapMatch | str:
    """The numeric tie-break: a match, or the reason the tap stays unmatched."""
    ref = reference.astype(np.float64)
    scale = max(float(np.abs(ref).max()), float(np.finfo(np.float64).tiny))
    errors = [
        (float(np.abs(value_of(name, t).astype(np.float64) - ref).max()) / scale, t) for t in window
    ]
    errors.sort(key=lambda pair: pair[0])
    listed = ", ".join(f"'{short_key(t.key, 40)}' {e:.2g}" for e, t in errors[:4])
    head = f"{len(window)} tensors of shape {shape} between {before} and {after}"
    if limit is None:
        return f"{head}; no max_abs_norm budget to tell them apart by value ({listed})"
    within = [(e, t) for e, t in errors if e <= limit]
    clear = all(e > CLEAR_MARGIN * limit for e, t in errors if (e, t) not in within)
    if len(within) == 1 and clear:
        error, tensor = within[0]
        layout = layout_of(name, tensor.key)
        return TapMatch(
            name,
            "numeric",
            tensor.key,
            layout,
            f"{_where(tensor, layout)}: {head}; on image '{image}' only it is within the "
            f"max_abs_norm budget ({error:.2g} <= {limit:.0e}), the others over {CLEAR_MARGIN:g}x "
            f"it (candidates: {listed})",
        )
    if not within:
        why = f"none is within the max_abs_norm budget {limit:.0e} on image '{image}'"
    elif len(within) > 1:
        why = f"{len(within)} are within the budget {limit:.0e} on image '{image}'"
    else:
        why = f"the runner-up is not over {CLEAR_MARGIN:g}x the budget {limit:.0e}"
    return f"ambiguous: {head}; {why} (candidates: {listed})"


def match_summary(matches: Sequence[TapMatch]) -> str:
    """``taps: 20 of 21 compared (1 final output, 9 shape-unique, ...); 1 unmatched ...``"""
    counts = Counter(m.how for m in matches)
    matched = len(matches) - counts.get("unmatched", 0)
    kinds = ("final output", "module path", "explicit", "shape-unique", "shape-order", "numeric")
    hows = ", ".join(f"{counts[h]} {h}" for h in kinds if counts.get(h))
    text = f"taps: {matched} of {len(matches)} compared ({hows})"
    if counts.get("unmatched"):
        text += f"; {counts['unmatched']} unmatched, left out of the verdict"
    return text
