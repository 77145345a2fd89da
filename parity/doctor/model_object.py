"""``precision`` on the user's own model object: what it runs in, and what that costs.

The object is run as the user gave it, with hooks on its convolutions and linear layers
(the dtype they compute in, their memory format), and again as strict fp32: a copy in
float32, contiguous, each layer's forward with autocast disabled and its inputs in
float32, TF32 off. The settings found (autocast inside the forward, reduced-precision
weights, channels_last, TF32 / matmul precision) are named, and the drift between the two
runs is judged against the card's fp32 logits budget: a setting is a problem when it
moves the logits beyond it.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import numpy as np

from parity import lazy
from parity.compare import judge, tap_metrics
from parity.doctor.effect import EFFECT_VARIANT, RANK_METRICS
from parity.doctor.findings import OK, PROBLEM, Finding
from parity.tolerances import TolerancePolicy

_COMPUTE = ("Conv1d", "Conv2d", "Conv3d", "Linear", "ConvTranspose2d")


def _compute_layers(module: Any) -> list[tuple[str, Any]]:
    return [(n, m) for n, m in module.named_modules() if type(m).__name__ in _COMPUTE]


def _observe(torch: Any, module: Any, batch: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """Run as given; the dtypes and memory formats the compute layers saw."""
    seen: dict[str, Any] = {"dtypes": set(), "channels_last": False, "device": "cpu"}

    def hook(layer: Any, args: Any, out: Any) -> None:
        seen["dtypes"].add((str(layer.weight.dtype), str(out.dtype)))
        seen["device"] = out.device.type
        if out.dim() == 4 and out.is_contiguous(memory_format=torch.channels_last):
            seen["channels_last"] = seen["channels_last"] or not out.is_contiguous()

    handles = [m.register_forward_hook(hook) for _, m in _compute_layers(module)]
    try:
        device = next(module.parameters()).device
        with torch.no_grad():
            output = module(batch.to(device))
    finally:
        for handle in handles:
            handle.remove()
    return output.detach().float().cpu().numpy(), seen


@contextlib.contextmanager
def _strict(torch: Any) -> Iterator[None]:
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


def _strict_run(torch: Any, module: Any, batch: Any) -> np.ndarray:
    """A float32 contiguous copy, every layer's forward without autocast, inputs float32."""
    strict = copy.deepcopy(module).float().to(memory_format=torch.contiguous_format)
    device = next(strict.parameters()).device
    for _, layer in strict.named_modules():
        if next(layer.children(), None) is None:
            layer.forward = _fp32_forward(torch, layer.forward, device.type)
    with torch.no_grad(), _strict(torch), torch.autocast(device.type, enabled=False):
        output = strict(batch.to(device))
    return np.asarray(output.detach().float().cpu().numpy())


def _fp32_forward(torch: Any, forward: Any, device_type: str) -> Any:
    def run(*args: Any, **kwargs: Any) -> Any:
        args = tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
        with torch.autocast(device_type, enabled=False):
            return forward(*args, **kwargs)

    return run


def _settings(torch: Any, module: Any, seen: dict[str, Any]) -> list[str]:
    """The reduced-precision settings the object runs with."""
    found = []
    computed = {out for weight, out in seen["dtypes"] if weight == "torch.float32"}
    for dtype in sorted(computed - {"torch.float32"}):
        found.append(f"autocast {dtype.removeprefix('torch.')} on {seen['device']}")
    weights = {str(p.dtype) for p in module.parameters() if p.is_floating_point()}
    for dtype in sorted(weights - {"torch.float32"}):
        found.append(f"{dtype.removeprefix('torch.')} weights")
    if seen["channels_last"]:
        found.append("channels_last memory format")
    if seen["device"] == "cuda" and (
        torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32
    ):
        found.append("TF32 (cuDNN / cuBLAS)")
    if torch.get_float32_matmul_precision() != "highest":
        found.append(f"float32 matmul precision {torch.get_float32_matmul_precision()!r}")
    return found


def diagnose_model_object(
    module: Any,
    batch: np.ndarray,
    policy: TolerancePolicy,
    model: str,
    logits_tap: str = "logits",
    trained: bool = True,
) -> Finding:
    """The user's model object vs itself in strict fp32, on ``batch`` (NCHW float32)."""
    torch = lazy.torch()
    runnable = copy.deepcopy(module).eval() if module.training else module
    feed = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
    observed, seen = _observe(torch, runnable, feed)
    strict = _strict_run(torch, runnable, feed)
    settings = _settings(torch, runnable, seen)
    metrics = tap_metrics(strict, observed.reshape(strict.shape), logits=True)
    budget = policy.budget(model, EFFECT_VARIANT, logits_tap)
    failures = [f for f in judge(metrics, budget) if trained or f.split()[0] not in RANK_METRICS]
    agreement = 1.0 if metrics.top1_agreement is None else metrics.top1_agreement
    flips = int(round((1.0 - agreement) * len(batch)))
    evidence: dict[str, Any] = {
        "settings": settings or ["none (fp32, contiguous, no autocast)"],
        "compute_dtypes": sorted(f"{w} -> {o}" for w, o in seen["dtypes"]),
        "logits_vs_strict_fp32": {
            "max_abs_norm": metrics.max_abs_norm,
            "sqnr_db": metrics.sqnr_db,
            "cosine": metrics.cosine,
            "top1_flips": flips if trained else "not counted (untrained weights)",
        },
        "budget": dict(budget.limits),
    }
    named = " + ".join(settings) or "no reduced-precision setting found"
    drift = (
        f"logits vs the same model in strict fp32: max_abs_norm {metrics.max_abs_norm:.2g}, "
        f"SQNR {metrics.sqnr_db:.1f} dB"
    )
    if not failures:
        return Finding(
            "precision",
            OK,
            f"your model object: {named}; {drift}, within the fp32 budget",
            evidence,
        )
    fix = (
        "run the model in float32 without torch.autocast (model.float(); no autocast in "
        "forward), or gate it with budgets measured for reduced precision"
    )
    return Finding(
        "precision",
        PROBLEM,
        f"your model object runs with {named}: {drift} ({'; '.join(failures)})",
        evidence,
        fix,
    )
