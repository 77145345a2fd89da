"""The Keras artifact: the twin built from the torch weights, saved as ``.keras``.

Its metadata carries ``runner_options.tap_layers``: for every tap of the card, the
Keras layer whose output is that tap (a module's *input* is the output of the layer
feeding the module's layer). The Keras, TFLite and tf2onnx runners all locate taps
through this one map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parity import lazy
from parity.backends.keras.internals import producer
from parity.errors import ModelCardError, TapError
from parity.export.keras import KerasTwin, build_keras_twin
from parity.taps import Tap

if TYPE_CHECKING:
    from parity.artifacts import BuildContext


def tap_layers(twin: KerasTwin, taps: Sequence[Tap]) -> dict[str, str]:
    """Tap name -> name of the Keras layer whose output is the tap."""
    located = {}
    for tap in taps:
        if tap.module not in twin.module_to_layer:
            raise TapError(f"tap '{tap.name}': the Keras twin has no layer for '{tap.module}'")
        layer = twin.model.get_layer(twin.module_to_layer[tap.module])
        if tap.point == "input":
            layer = producer(layer.input)
        located[tap.name] = str(layer.name)
    return located


def twin_for(ctx: BuildContext, **options: Any) -> KerasTwin:
    """Build the card's Keras twin from the context's torch weights."""
    if ctx.card.keras_twin is None:
        raise ModelCardError(f"{ctx.card.path}: no keras_twin architecture; cannot export Keras")
    lazy.tensorflow()
    return build_keras_twin(
        ctx.card.keras_twin, ctx.model().state_dict_numpy(), ctx.card.preprocess.input_hw, **options
    )


def export_keras(ctx: BuildContext, out: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """Save the twin to ``out`` (Keras 3 format); metadata holds the tap -> layer map."""
    twin = twin_for(ctx, **options)
    twin.model.save(out)
    return {
        "exporter": "parity Keras twin + weight transfer",
        "architecture": ctx.card.keras_twin,
        "runner_options": {"tap_layers": tap_layers(twin, ctx.card.taps)},
    }
