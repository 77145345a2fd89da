"""The logical tap map: named points in the network, located by torch module path.

A tap is the output (or the input) of one torch module, named after it. Every runtime
locates taps from the module path alone — torch by forward hooks, ONNX by node name
scopes, Keras by the twin's layer names, TFLite by the Keras names inside its fused
tensor names — so one list aligns every runtime. A tap that resolves to nothing, or to
more than one tensor, is an error naming the tap, never a skip.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from parity.errors import ModelCardError

Point = Literal["output", "input"]

_BRACES = re.compile(r"\{(\d+)\.\.(\d+)\}")
_ROLES = ("stem", "blocks", "features", "pooled", "logits")


@dataclasses.dataclass(frozen=True)
class Tap:
    """One comparison point.

    Attributes:
        name: the logical name used in reports and budgets (``stem``, ``features.3``).
        module: the torch module path it mirrors (``""`` is the whole model).
        point: ``"output"`` of the module, or its ``"input"`` (for values that only exist
            between modules, e.g. the pooled features fed to a classifier).
        role: stem / block / features / pooled / logits.
    """

    name: str
    module: str
    point: Point = "output"
    role: str = "block"

    @property
    def is_logits(self) -> bool:
        return self.role == "logits"

    def describe(self) -> str:
        return f"{self.point} of module '{self.module or '<root>'}'"

    def to_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


def expand_braces(pattern: str) -> list[str]:
    """``"layer{1..2}.{0..1}"`` -> ``["layer1.0", "layer1.1", "layer2.0", "layer2.1"]``."""
    match = _BRACES.search(pattern)
    if match is None:
        return [pattern]
    low, high = int(match.group(1)), int(match.group(2))
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [item for i in range(low, high + 1) for item in expand_braces(f"{head}{i}{tail}")]


def _locator(value: str) -> tuple[str, Point]:
    if value.startswith("input:"):
        return value.removeprefix("input:"), "input"
    return value, "output"


def taps_from_card(table: Mapping[str, Any], source: str) -> tuple[Tap, ...]:
    """Build the ordered tap list from a model card's ``[taps]`` table.

    Keys, in forward order: ``stem``, ``blocks`` (list of module paths, brace ranges
    allowed), ``features``, ``pooled``, ``logits``; a value ``"input:<module>"`` taps the
    module's input. The order of the list is the order of the forward pass.
    """
    unknown = sorted(set(table) - set(_ROLES))
    if unknown:
        raise ModelCardError(f"{source}: unknown [taps] keys {unknown}; known: {list(_ROLES)}")
    if "logits" not in table:
        raise ModelCardError(f"{source}: [taps] needs a 'logits' entry")
    taps: list[Tap] = []
    for role in _ROLES:
        if role not in table:
            continue
        if role == "blocks":
            for pattern in table[role]:
                for path in expand_braces(pattern):
                    module, point = _locator(path)
                    taps.append(Tap(module, module, point, "block"))
        else:
            module, point = _locator(table[role])
            taps.append(Tap(role, module, point, role))
    names = [t.name for t in taps]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ModelCardError(f"{source}: tap names repeat: {duplicates}")
    return tuple(taps)


def select_taps(taps: Sequence[Tap], names: Sequence[str] | None) -> tuple[Tap, ...]:
    """The taps named (all if ``names`` is None), in forward order; unknown names raise."""
    if names is None:
        return tuple(taps)
    known = {t.name for t in taps}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ModelCardError(f"unknown taps {unknown}; known: {sorted(known)}")
    return tuple(t for t in taps if t.name in names)
