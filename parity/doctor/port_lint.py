"""``port_lint``: a Keras port's layers against torch semantics."""

from __future__ import annotations

from typing import Any

import numpy as np

from parity.doctor.findings import OK, PROBLEM, Finding

#: torch ``nn.BatchNorm2d`` default epsilon.
TORCH_BN_EPS = 1e-5


def _flat_layers(model: Any) -> list[Any]:
    layers = []
    for layer in model.layers:
        layers.append(layer)
        if hasattr(layer, "layers"):
            layers.extend(_flat_layers(layer))
    return layers


def diagnose_port(keras_model: Any, torch_bn_eps: float = TORCH_BN_EPS) -> Finding:
    """Lint a Keras port of a torch model for the classic porting mismatches."""
    bn_eps: list[str] = []
    same_stride2: list[str] = []
    avg_same: list[str] = []
    max_same: list[str] = []
    counts = {"batchnorm": 0, "stride2_conv": 0, "avg_pool": 0, "strided_max_pool": 0}
    for layer in _flat_layers(keras_model):
        kind = type(layer).__name__
        if kind == "BatchNormalization":
            counts["batchnorm"] += 1
            eps = float(layer.epsilon)
            if not np.isclose(eps, torch_bn_eps, rtol=1e-3, atol=0):
                bn_eps.append(f"{layer.name} (epsilon {eps:g})")
        elif kind in ("Conv2D", "DepthwiseConv2D", "SeparableConv2D"):
            strides = tuple(layer.strides)
            if max(strides) > 1:
                counts["stride2_conv"] += 1
                kernel = tuple(layer.kernel_size)
                # a 1x1 kernel pads nothing with 'same' on even inputs: not the bug
                if layer.padding == "same" and max(kernel) > 1:
                    same_stride2.append(f"{layer.name} ({kind} {kernel} stride {strides})")
        elif kind == "AveragePooling2D":
            counts["avg_pool"] += 1
            if layer.padding == "same":
                avg_same.append(f"{layer.name} (pool {tuple(layer.pool_size)})")
        elif kind == "MaxPooling2D" and max(layer.strides) > 1:
            counts["strided_max_pool"] += 1
            pool = tuple(layer.pool_size)
            if layer.padding == "same" and max(pool) > 1:
                max_same.append(f"{layer.name} (pool {pool} stride {tuple(layer.strides)})")
    evidence: dict[str, Any] = {"layers_checked": counts}
    causes = []
    if bn_eps:
        evidence["bn_epsilon_mismatch"] = bn_eps
        causes.append(
            f"{len(bn_eps)} BatchNormalization layers have epsilon != torch's "
            f"{torch_bn_eps:g} (e.g. {bn_eps[0]})"
        )
    if same_stride2:
        evidence["stride2_same_padding"] = same_stride2
        causes.append(
            f"{len(same_stride2)} stride-2 convolutions use padding='same' (TF pads "
            f"bottom/right only, torch pads symmetrically; e.g. {same_stride2[0]})"
        )
    if avg_same:
        evidence["avgpool_same_padding"] = avg_same
        causes.append(
            f"{len(avg_same)} AveragePooling2D layers use padding='same' (TF excludes the "
            "padding from the average, torch's count_include_pad=True includes it)"
        )
    if max_same:
        evidence["maxpool_same_padding"] = max_same
        causes.append(
            f"{len(max_same)} strided MaxPooling2D layers use padding='same' (TF pads "
            "bottom/right only, torch's MaxPool2d(padding=1) both sides: the windows shift "
            f"by one pixel; e.g. {max_same[0]})"
        )
    fixes = {
        "bn_epsilon_mismatch": f"BatchNormalization(epsilon={torch_bn_eps:g})",
        "stride2_same_padding": "ZeroPadding2D(((p, p), (p, p))) then padding='valid'",
        "avgpool_same_padding": "ZeroPadding2D then AveragePooling2D(padding='valid') "
        "(count_include_pad=True)",
        "maxpool_same_padding": "ZeroPadding2D with -inf (or a large negative) then "
        "MaxPooling2D(padding='valid')",
    }
    if causes:
        fix = "; ".join(text for key, text in fixes.items() if key in evidence)
        return Finding("port_lint", PROBLEM, "; ".join(causes), evidence, fix)
    return Finding(
        "port_lint",
        OK,
        f"{counts['batchnorm']} BatchNorm epsilons, {counts['stride2_conv']} strided convs, "
        f"{counts['avg_pool']} average pools, {counts['strided_max_pool']} strided max pools "
        "match torch semantics",
        evidence,
    )
