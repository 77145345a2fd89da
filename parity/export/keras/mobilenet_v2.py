"""Keras twin of torchvision's ``MobileNetV2`` (any ``width_mult``), NHWC.

Mirrors ``torchvision/models/mobilenetv2.py``: ``features.0`` (3x3 s2
Conv2dNormActivation), ``features.1..N`` (InvertedResidual, ``.conv`` = [pw CNA,] dw
CNA, 1x1 conv, BN), ``features.N+1`` (1x1 CNA), ``adaptive_avg_pool2d`` + ``flatten``,
``classifier`` = [Dropout, Linear]. Channel counts come from the state_dict shapes, so
any ``width_mult``/``round_nearest`` works; strides come from the block layout
(``inverted_residual_setting``), which the state_dict cannot show.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from parity.errors import WeightTransferError
from parity.export.keras.transfer import TwinGraph, keras_layer_name, register_twin

if TYPE_CHECKING:
    import keras

#: torchvision's default (t, c, n, s); only n and s are used (t and c come from shapes).
DEFAULT_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _conv_bn_relu6(
    g: TwinGraph, x: Any, path: str, *, kernel: int, stride: int, depthwise: bool = False
) -> Any:
    """torchvision ``Conv2dNormActivation(..., activation_layer=nn.ReLU6)`` at ``path``."""
    x = g.conv(
        x,
        f"{path}.0",
        kernel=kernel,
        stride=stride,
        padding=(kernel - 1) // 2,
        depthwise=depthwise,
    )
    x = g.batch_norm(x, f"{path}.1")
    x = g.relu(x, f"{path}.2", max_value=6.0)
    g.output_of(path, f"{path}.2")
    return x


def _inverted_residual(g: TwinGraph, x: Any, path: str, stride: int) -> Any:
    """torchvision ``InvertedResidual`` at ``path``; expansion and residual from shapes."""
    block_in = x
    in_ch = int(x.shape[-1])
    expanded = g.has_module(f"{path}.conv.3")  # t != 1: pw CNA first, 4 children
    j = 0
    if expanded:
        x = _conv_bn_relu6(g, x, f"{path}.conv.0", kernel=1, stride=1)
        j = 1
    x = _conv_bn_relu6(g, x, f"{path}.conv.{j}", kernel=3, stride=stride, depthwise=True)
    x = g.conv(x, f"{path}.conv.{j + 1}", kernel=1, stride=1, padding=0)
    x = g.batch_norm(x, f"{path}.conv.{j + 2}")
    last_bn = f"{path}.conv.{j + 2}"
    g.output_of(f"{path}.conv", last_bn)
    if stride == 1 and in_ch == int(x.shape[-1]):  # torchvision's use_res_connect
        name = keras_layer_name(path)
        x = g.add(block_in, x, name=name)
        g.output_of(path, name)
    else:
        g.output_of(path, last_bn)
    return x


@register_twin("mobilenet_v2")
def build_mobilenet_v2(
    g: TwinGraph,
    input_hw: tuple[int, int],
    *,
    inverted_residual_setting: Sequence[Sequence[int]] = DEFAULT_SETTING,
) -> keras.Model:
    """Build the MobileNetV2 twin from ``g.state_dict`` and fill its weights."""
    keras = g.keras
    strides = [s if i == 0 else 1 for _t, _c, n, s in inverted_residual_setting for i in range(n)]
    n_blocks = 0
    while g.has_module(f"features.{n_blocks + 1}.conv"):
        n_blocks += 1
    if n_blocks != len(strides):
        raise WeightTransferError(
            f"torch state_dict has {n_blocks} InvertedResidual blocks (features.1.conv...), "
            f"the inverted_residual_setting expects {len(strides)}"
        )
    inputs = keras.Input((*input_hw, 3), name="input")
    x = _conv_bn_relu6(g, inputs, "features.0", kernel=3, stride=2)
    for b, stride in enumerate(strides, start=1):
        x = _inverted_residual(g, x, f"features.{b}", stride)
    last = f"features.{n_blocks + 1}"
    x = _conv_bn_relu6(g, x, last, kernel=1, stride=1)
    g.output_of("features", f"{last}.2")
    # torch: nn.functional.adaptive_avg_pool2d(x, (1, 1)) then torch.flatten(x, 1).
    x = g.global_avg_pool(x, "adaptive_avg_pool2d")
    x = g.flatten(x)
    g.output_of("classifier.0", "flatten")  # Dropout: identity at inference, no layer
    x = g.linear(x, "classifier.1")
    g.output_of("classifier", "classifier.1")
    g.output_of("", "classifier.1")
    return g.finish(inputs, x, name="mobilenet_v2")
