"""Keras twin of torchvision's ``ResNet`` (BasicBlock or Bottleneck), NHWC.

Mirrors ``torchvision/models/resnet.py`` (v1.5: the stride sits on the 3x3 conv):
``conv1`` 7x7 s2 p3, ``bn1``, ``relu``, ``maxpool`` 3x3 s2 p1, ``layer1..4``,
``avgpool``, ``flatten``, ``fc``. Block type (``conv3`` present -> Bottleneck), block
counts and widths come from the state_dict, so resnet18/34/50/101/152 and the wide
variants build from their weights alone; ``groups`` (ResNeXt) is inferred from the 3x3
kernel's shape. ``replace_stride_with_dilation`` is not supported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from parity.errors import WeightTransferError
from parity.export.keras.transfer import TwinGraph, keras_layer_name, register_twin

if TYPE_CHECKING:
    import keras


def _block(g: TwinGraph, x: Any, path: str, *, stride: int, bottleneck: bool) -> Any:
    """One BasicBlock or Bottleneck at ``path``; ``self.relu`` runs 2 or 3 times."""
    identity = x
    calls = 3 if bottleneck else 2
    relu = f"{path}.relu"
    if bottleneck:
        out = g.conv(x, f"{path}.conv1", kernel=1, stride=1, padding=0)
        out = g.batch_norm(out, f"{path}.bn1")
        out = g.relu(out, relu, call=0, calls=calls)
        out = g.conv(out, f"{path}.conv2", kernel=3, stride=stride, padding=1)
        out = g.batch_norm(out, f"{path}.bn2")
        out = g.relu(out, relu, call=1, calls=calls)
        out = g.conv(out, f"{path}.conv3", kernel=1, stride=1, padding=0)
        out = g.batch_norm(out, f"{path}.bn3")
    else:
        out = g.conv(x, f"{path}.conv1", kernel=3, stride=stride, padding=1)
        out = g.batch_norm(out, f"{path}.bn1")
        out = g.relu(out, relu, call=0, calls=calls)
        out = g.conv(out, f"{path}.conv2", kernel=3, stride=1, padding=1)
        out = g.batch_norm(out, f"{path}.bn2")
    if g.has_module(f"{path}.downsample"):
        identity = g.conv(x, f"{path}.downsample.0", kernel=1, stride=stride, padding=0)
        identity = g.batch_norm(identity, f"{path}.downsample.1")
        g.output_of(f"{path}.downsample", f"{path}.downsample.1")
    out = g.add(out, identity, name=keras_layer_name(path, "add"))
    out = g.relu(out, relu, call=calls - 1, calls=calls)
    g.output_of(path, relu)
    return out


@register_twin("resnet")
def build_resnet(g: TwinGraph, input_hw: tuple[int, int]) -> keras.Model:
    """Build the ResNet twin from ``g.state_dict`` and fill its weights."""
    keras = g.keras
    bottleneck = g.has_module("layer1.0.conv3")
    inputs = keras.Input((*input_hw, 3), name="input")
    x = g.conv(inputs, "conv1", kernel=7, stride=2, padding=3)
    x = g.batch_norm(x, "bn1")
    x = g.relu(x, "relu")
    x = g.max_pool_after_relu(x, "maxpool", kernel=3, stride=2, padding=1)
    for li in range(1, 5):
        layer = f"layer{li}"
        n = 0
        while g.has_module(f"{layer}.{n}"):
            n += 1
        if n == 0:
            raise WeightTransferError(f"torch state_dict has no {layer}.0.* tensors (ResNet stage)")
        for bi in range(n):
            stride = 2 if li > 1 and bi == 0 else 1
            x = _block(g, x, f"{layer}.{bi}", stride=stride, bottleneck=bottleneck)
        g.output_of(layer, g.module_to_layer[f"{layer}.{n - 1}"])
    # torch nn.AdaptiveAvgPool2d((1, 1)) keeps (N, C, 1, 1); torch.flatten follows.
    x = g.global_avg_pool(x, "avgpool")
    g.output_of("avgpool", "avgpool")
    x = g.flatten(x)
    x = g.linear(x, "fc")
    g.output_of("", "fc")
    return g.finish(inputs, x, name="resnet")
