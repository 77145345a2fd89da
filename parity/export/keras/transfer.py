"""Shared pieces of the Keras twins: layer naming, a graph builder, strict weight transfer.

Naming scheme (measured on keras 3.15 / TF 2.21 / LiteRT 2.3 / tf2onnx 1.17):

* A Keras layer that computes a torch module's output is named by the module's dotted
  path verbatim: ``features.3.conv.0.0``, ``layer2.1.bn2``. Dots are legal in Keras 3
  layer names and in TF op names, so they reach TFLite tensor names
  (``mobilenet_v2_1/features.3.conv.0.2_1/Relu6``) and tf2onnx node names unchanged
  apart from TF's ``_<n>`` uniquifying suffix on each scope.
* A helper layer that is not a module's output is named ``<owner path>-<tag>`` where the
  owner is the module whose ``forward`` runs the op: ``features.0.0-pad``,
  ``layer1.0-add``, ``layer1.0.relu-call0`` (an earlier call of a module called several
  times; its last call gets the bare path). ``-`` cannot occur in a module attribute
  name, so the split back to (module, tag) is unambiguous.
* Functional ops in the root's ``forward`` and the input use torch.fx's node names:
  ``input``, ``adaptive_avg_pool2d``, ``flatten``.

Characters Keras or TF reject (``/``, ``:``, ``@``, spaces) are refused up front.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from parity.errors import WeightTransferError

if TYPE_CHECKING:
    import keras

__all__ = [
    "ROOT_LAYER_NAMES",
    "LayerPlan",
    "TwinGraph",
    "keras_layer_name",
    "split_layer_name",
    "transfer_weights",
]

#: Layer names for the input and for functional ops of the root module (torch.fx names).
ROOT_LAYER_NAMES = frozenset({"input", "adaptive_avg_pool2d", "flatten"})

_TAG_SEP = "-"
# TF's op-name rule (tensorflow/core/graph/graph.cc) minus '/', which Keras 3 refuses,
# and minus '-' and '>', kept for our tags.
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_]+")
_TAG_RE = re.compile(r"[A-Za-z0-9_.]+")

Stride2Padding = Literal["torch", "same"]


def keras_layer_name(module_path: str, tag: str | None = None) -> str:
    """Keras layer name for torch module ``module_path`` (or for its helper op ``tag``).

    The root module ("") has no layer of its own; pass its output layer instead.
    """
    if not all(_SEGMENT_RE.fullmatch(seg) for seg in module_path.split(".")):
        raise WeightTransferError(
            f"torch module path {module_path!r} cannot name a Keras layer: "
            "use modules named with letters, digits and '_' only"
        )
    if tag is None:
        return module_path
    if not _TAG_RE.fullmatch(tag):
        raise WeightTransferError(f"helper tag {tag!r} for {module_path!r} is not [A-Za-z0-9_.]+")
    return f"{module_path}{_TAG_SEP}{tag}"


def split_layer_name(layer_name: str) -> tuple[str, str | None]:
    """Inverse of :func:`keras_layer_name`: ``(module path, tag or None)``.

    Root-level names (:data:`ROOT_LAYER_NAMES`) give ``("", name)``.
    """
    if layer_name in ROOT_LAYER_NAMES:
        return "", layer_name
    path, sep, tag = layer_name.partition(_TAG_SEP)
    return path, (tag if sep else None)


# ---------------------------------------------------------------------------------------
# Weight conversion (pure numpy).


def _conv(w: np.ndarray) -> np.ndarray:  # (O, I/g, kh, kw) -> (kh, kw, I/g, O)
    return w.transpose(2, 3, 1, 0)


def _depthwise(w: np.ndarray) -> np.ndarray:  # (C, 1, kh, kw) -> (kh, kw, C, 1)
    return w.transpose(2, 3, 0, 1)


def _linear(w: np.ndarray) -> np.ndarray:  # (out, in) -> (in, out)
    return w.T


def _same(w: np.ndarray) -> np.ndarray:
    return w


Kind = Literal["conv", "depthwise", "linear", "batchnorm"]

# kind -> [(keras weight name, torch suffix, converter)]
_MAPPINGS: dict[str, list[tuple[str, str, Callable[[np.ndarray], np.ndarray]]]] = {
    "conv": [("kernel", "weight", _conv), ("bias", "bias", _same)],
    "depthwise": [("kernel", "weight", _depthwise), ("bias", "bias", _same)],
    "linear": [("kernel", "weight", _linear), ("bias", "bias", _same)],
    "batchnorm": [
        ("gamma", "weight", _same),
        ("beta", "bias", _same),
        ("moving_mean", "running_mean", _same),
        ("moving_variance", "running_var", _same),
    ],
}

#: state_dict entries that carry no inference weight and are skipped on purpose.
IGNORED_SUFFIXES = (".num_batches_tracked",)


@dataclass(frozen=True)
class LayerPlan:
    """One Keras layer to fill from the torch tensors under ``torch_prefix``."""

    layer: str
    kind: Kind
    torch_prefix: str


def _shape(a: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in a.shape)


def transfer_weights(
    model: keras.Model, state_dict: Mapping[str, np.ndarray], plans: Iterable[LayerPlan]
) -> None:
    """Copy ``state_dict`` into ``model`` one-to-one, or raise :class:`WeightTransferError`.

    Every torch tensor (except ``num_batches_tracked``) must be consumed exactly once and
    every Keras weight set exactly once, with matching shapes after layout conversion.
    """
    problems: list[str] = []
    pending = {k for k in state_dict if not k.endswith(IGNORED_SUFFIXES)}
    consumed: dict[str, str] = {}
    assigned: set[str] = set()
    for plan in plans:
        layer = model.get_layer(plan.layer)
        variables = {v.name: v for v in layer.weights}
        for keras_name, suffix, convert in _MAPPINGS[plan.kind]:
            var = variables.get(keras_name)
            key = f"{plan.torch_prefix}.{suffix}"
            where = f"Keras {plan.layer}/{keras_name}"
            if var is None:
                if keras_name == "bias" and key not in state_dict:
                    continue  # bias-free conv/linear on both sides
                problems.append(
                    f"torch {key!r} {_shape(state_dict[key])} has no Keras weight "
                    f"({plan.layer} has no {keras_name!r})"
                    if key in state_dict
                    else f"{where} has no torch tensor {key!r}"
                )
                continue
            if key in consumed:
                problems.append(f"torch {key!r} consumed twice ({consumed[key]}, {where})")
                continue
            if var.path in assigned:
                problems.append(f"{where} set twice (second time from torch {key!r})")
                continue
            if key not in state_dict:
                problems.append(
                    f"torch state_dict has no {key!r} for {where} {_shape(var)} (missing tensor)"
                )
                continue
            value = np.asarray(state_dict[key])
            if not np.issubdtype(value.dtype, np.floating):
                problems.append(f"torch {key!r} has dtype {value.dtype}, expected floating")
                continue
            converted = convert(value.astype(np.float32, copy=False))
            if _shape(converted) != _shape(var):
                problems.append(
                    f"shape mismatch: torch {key!r} {_shape(value)} -> {plan.kind} layout "
                    f"{_shape(converted)} vs {where} {_shape(var)}"
                )
                continue
            var.assign(np.ascontiguousarray(converted))
            consumed[key] = where
            pending.discard(key)
            assigned.add(var.path)
    for key in sorted(pending):
        problems.append(
            f"torch {key!r} {_shape(state_dict[key])} is left over: no Keras layer consumes it"
        )
    for var in model.weights:
        if var.path not in assigned:
            problems.append(f"Keras {var.path} {_shape(var)} was not set from any torch tensor")
    if problems:
        head = f"{len(problems)} problem(s) mapping the torch state_dict onto Keras '{model.name}'"
        shown = "; ".join(problems[:8]) + (
            f"; ... {len(problems) - 8} more" if len(problems) > 8 else ""
        )
        raise WeightTransferError(f"{head}: {shown}")


# ---------------------------------------------------------------------------------------
# Graph builder shared by the architecture builders.


class TwinGraph:
    """Builds a functional Keras graph layer by layer, named after torch module paths.

    Records, per layer, which torch tensors fill it (:class:`LayerPlan`), and per torch
    module which Keras layer produces its output (``module_to_layer``; ``module_calls``
    for modules whose ``forward`` runs more than once).
    """

    def __init__(
        self,
        state_dict: Mapping[str, np.ndarray],
        *,
        bn_epsilon: float,
        stride2_padding: Stride2Padding,
    ) -> None:
        import keras

        if stride2_padding not in ("torch", "same"):
            raise ValueError(f"stride2_padding must be 'torch' or 'same', not {stride2_padding!r}")
        self.keras = keras
        self.layers = keras.layers
        self.state_dict = state_dict
        self.bn_epsilon = float(bn_epsilon)
        self.stride2_padding = stride2_padding
        self.plans: list[LayerPlan] = []
        self.module_to_layer: dict[str, str] = {}
        self.module_calls: dict[str, list[str]] = {}

    # -- state_dict queries -------------------------------------------------------------
    def has_module(self, path: str) -> bool:
        """True if any state_dict key lives under module ``path``."""
        prefix = path + "."
        return any(k.startswith(prefix) for k in self.state_dict)

    def shape(self, key: str, needed_by: str) -> tuple[int, ...]:
        """Shape of torch tensor ``key``, which building Keras layer ``needed_by`` requires."""
        if key not in self.state_dict:
            raise WeightTransferError(
                f"torch state_dict has no {key!r}, needed to build Keras layer {needed_by!r}"
            )
        return _shape(self.state_dict[key])

    # -- bookkeeping ----------------------------------------------------------------------
    def output_of(self, module_path: str, layer_name: str) -> None:
        """Record that torch module ``module_path`` outputs what Keras ``layer_name`` does."""
        self.module_to_layer[module_path] = layer_name

    # -- layers ---------------------------------------------------------------------------
    def conv(
        self,
        x: Any,
        path: str,
        *,
        kernel: int,
        stride: int,
        padding: int,
        depthwise: bool = False,
    ) -> Any:
        """torch ``nn.Conv2d`` (square kernel, dilation 1), ``groups`` inferred from shapes.

        Stride 1 with ``padding == (kernel-1)//2`` uses Keras 'same' (identical: symmetric
        padding). Otherwise torch's symmetric padding is an explicit ``ZeroPadding2D``
        followed by a 'valid' conv, because for stride 2 Keras 'same' pads bottom/right
        only. ``stride2_padding='same'`` reproduces that classic porting bug on purpose.
        """
        name = keras_layer_name(path)
        w_shape = self.shape(f"{path}.weight", name)
        in_ch = int(x.shape[-1])
        out_ch = w_shape[0]
        use_bias = f"{path}.bias" in self.state_dict
        if padding == 0:
            keras_padding = "valid"
        elif stride == 1 and 2 * padding == kernel - 1:
            keras_padding = "same"
        elif stride > 1 and self.stride2_padding == "same":
            keras_padding = "same"  # fault injection: TF pads (0, 1), torch (1, 1)
        else:
            x = self.layers.ZeroPadding2D(padding, name=keras_layer_name(path, "pad"))(x)
            keras_padding = "valid"
        if depthwise:
            layer = self.layers.DepthwiseConv2D(
                kernel, stride, padding=keras_padding, use_bias=use_bias, name=name
            )
            kind: Kind = "depthwise"
        else:
            groups = in_ch // w_shape[1] if len(w_shape) == 4 and w_shape[1] else 1
            if groups < 1 or in_ch % groups:
                groups = 1  # shape error surfaces in transfer_weights, naming both sides
            layer = self.layers.Conv2D(
                out_ch,
                kernel,
                stride,
                padding=keras_padding,
                groups=groups,
                use_bias=use_bias,
                name=name,
            )
            kind = "conv"
        self.plans.append(LayerPlan(name, kind, path))
        self.output_of(path, name)
        return layer(x)

    def batch_norm(self, x: Any, path: str) -> Any:
        """torch ``nn.BatchNorm2d`` in eval mode, epsilon from the twin's ``bn_epsilon``."""
        name = keras_layer_name(path)
        layer = self.layers.BatchNormalization(
            axis=-1, momentum=0.9, epsilon=self.bn_epsilon, name=name
        )
        self.plans.append(LayerPlan(name, "batchnorm", path))
        self.output_of(path, name)
        return layer(x)

    def relu(
        self, x: Any, path: str, *, max_value: float | None = None, call: int = 0, calls: int = 1
    ) -> Any:
        """torch ``nn.ReLU``/``nn.ReLU6``; call ``call`` of ``calls`` of the same module.

        The last call gets the bare module path (it is what a forward hook sees last);
        earlier calls get ``<path>-call<i>``. ``module_calls`` lists them in order.
        """
        last = call == calls - 1
        name = keras_layer_name(path, None if last else f"call{call}")
        out = self.layers.ReLU(max_value=max_value, name=name)(x)
        if calls > 1:
            self.module_calls.setdefault(path, []).append(name)
        if last:
            self.output_of(path, name)
        return out

    def add(self, a: Any, b: Any, name: str) -> Any:
        """Elementwise sum (residual connection), named by the caller."""
        return self.layers.Add(name=name)([a, b])

    def max_pool_after_relu(
        self, x: Any, path: str, *, kernel: int, stride: int, padding: int
    ) -> Any:
        """torch ``nn.MaxPool2d`` on a non-negative input.

        torch pads max-pooling with -inf. Zero padding gives the same result here only
        because the input comes straight from a ReLU (all values >= 0) and every window
        holds at least one real value, so max(real values, 0) == max(real values). Keras
        'same' would be wrong: it pads bottom/right only and shifts the windows.
        """
        if padding:
            x = self.layers.ZeroPadding2D(padding, name=keras_layer_name(path, "pad"))(x)
        name = keras_layer_name(path)
        self.output_of(path, name)
        return self.layers.MaxPooling2D(kernel, stride, padding="valid", name=name)(x)

    def linear(self, x: Any, path: str) -> Any:
        """torch ``nn.Linear``: units from the weight's shape, bias if present."""
        name = keras_layer_name(path)
        out_features = self.shape(f"{path}.weight", name)[0]
        use_bias = f"{path}.bias" in self.state_dict
        self.plans.append(LayerPlan(name, "linear", path))
        self.output_of(path, name)
        return self.layers.Dense(out_features, use_bias=use_bias, name=name)(x)

    def global_avg_pool(self, x: Any, name: str) -> Any:
        """``adaptive_avg_pool2d(x, 1)``; keeps the (1, 1) spatial dims like torch."""
        return self.layers.GlobalAveragePooling2D(keepdims=True, name=name)(x)

    def flatten(self, x: Any) -> Any:
        """``torch.flatten(x, 1)`` on an (N, 1, 1, C) tensor."""
        return self.layers.Flatten(name="flatten")(x)

    # -- finish ---------------------------------------------------------------------------
    def finish(self, inputs: Any, outputs: Any, name: str) -> keras.Model:
        """Make the model and fill it strictly from the state_dict."""
        model = self.keras.Model(inputs, outputs, name=name)
        transfer_weights(model, self.state_dict, self.plans)
        return model


#: A Keras twin builder: ``builder(graph, input_hw) -> keras.Model``.
TwinBuilder = Callable[[TwinGraph, tuple[int, int]], Any]
#: Architecture name (a card's ``keras_twin``) -> its builder, filled by :func:`register_twin`.
ARCHITECTURES: dict[str, TwinBuilder] = {}


def register_twin(name: str) -> Callable[[TwinBuilder], TwinBuilder]:
    """Register a Keras twin family under ``name``: one module, one decorated builder."""

    def register(builder: TwinBuilder) -> TwinBuilder:
        if name in ARCHITECTURES and ARCHITECTURES[name] is not builder:
            raise WeightTransferError(f"Keras twin {name!r} is registered twice")
        ARCHITECTURES[name] = builder
        return builder

    return register
