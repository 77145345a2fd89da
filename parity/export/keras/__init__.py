"""Keras 3 twins of torchvision models, with exact weight transfer from a state_dict.

``build_keras_twin("mobilenet_v2", sd, (224, 224))`` builds an NHWC Keras model whose
layers are named after the torch modules they mirror (see :mod:`.transfer` for the
scheme) and fills it one-to-one from ``sd`` (numpy arrays; this package never imports
torch). Keras is imported only when a twin is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from parity.errors import ParityError
from parity.export.keras import mobilenet_v2, resnet  # noqa: F401  (they register their twins)
from parity.export.keras.transfer import (
    ARCHITECTURES,
    Stride2Padding,
    TwinGraph,
    keras_layer_name,
    register_twin,
)

if TYPE_CHECKING:
    import keras

__all__ = [
    "ARCHITECTURES", "TORCH_BN_EPS", "KerasTwin", "build_keras_twin", "keras_layer_name",
    "register_twin",
]  # fmt: skip

#: torch ``nn.BatchNorm2d`` default eps (not stored in a state_dict).
TORCH_BN_EPS = 1e-5


@dataclass
class KerasTwin:
    """A Keras model mirroring a torch model, and where each torch module's output is.

    Attributes:
        model: functional Keras model, input ``(N, H, W, 3)`` float32, NHWC throughout.
        module_to_layer: every torch module path with an output in the forward pass
            (containers and the root ``""`` included) -> the Keras layer whose output
            equals it (NHWC; transpose to NCHW to compare with torch).
        module_calls: modules whose ``forward`` runs more than once (ResNet blocks'
            ``relu``) -> the Keras layer of each call, in order; the last one is the
            ``module_to_layer`` entry (what a forward hook sees last).
    """

    model: keras.Model
    module_to_layer: dict[str, str]
    module_calls: dict[str, list[str]] = field(default_factory=dict)


def build_keras_twin(
    arch: str,
    state_dict: Mapping[str, np.ndarray],
    input_hw: tuple[int, int],
    *,
    bn_epsilon: float | None = None,
    stride2_padding: Stride2Padding = "torch",
) -> KerasTwin:
    """Build the Keras twin of torchvision ``arch`` and transfer ``state_dict`` into it.

    Args:
        arch: a key of :data:`ARCHITECTURES` ("mobilenet_v2", "resnet").
        state_dict: torch ``state_dict`` with numpy values.
        input_hw: static input height and width.
        bn_epsilon: BatchNorm epsilon; None means torch's 1e-5. 1e-3 (Keras's default)
            reproduces that porting bug.
        stride2_padding: "torch" pads stride-2 convs symmetrically like torch; "same"
            uses Keras 'same' (bottom/right only), reproducing that porting bug.

    Raises:
        WeightTransferError: the state_dict does not map one-to-one onto the twin.
        ParityError: unknown ``arch``.
    """
    if arch not in ARCHITECTURES:
        raise ParityError(
            f"no Keras twin for architecture {arch!r}; known: {', '.join(ARCHITECTURES)}"
        )
    graph = TwinGraph(
        state_dict,
        bn_epsilon=TORCH_BN_EPS if bn_epsilon is None else bn_epsilon,
        stride2_padding=stride2_padding,
    )
    model = ARCHITECTURES[arch](graph, (int(input_hw[0]), int(input_hw[1])))
    return KerasTwin(model, dict(graph.module_to_layer), dict(graph.module_calls))
