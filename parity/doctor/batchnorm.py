"""``batchnorm``: modules left in training mode; one image alone vs inside a batch."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from parity.compare import tap_metrics
from parity.doctor.findings import OK, PROBLEM, Finding

#: Image alone vs inside a batch, logits max_abs_norm: fp32 GEMM-blocking noise only.
BATCH_BUDGET = 1e-4


def _train_mode_modules(module: Any) -> dict[str, list[str]]:
    import torch

    norm_types = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.GroupNorm)
    found: dict[str, list[str]] = {"batchnorm": [], "dropout": []}
    for name, sub in module.named_modules():
        if not sub.training:
            continue
        if isinstance(sub, norm_types):
            found["batchnorm"].append(name)
        elif isinstance(sub, torch.nn.modules.dropout._DropoutNd):
            found["dropout"].append(name)
    return found


def diagnose_batchnorm(module: Any, batch: np.ndarray, image_index: int = 0) -> Finding:
    """Train-mode BN/Dropout, and one image alone vs inside ``batch`` (NCHW float32).

    The model is run on a deep copy in the mode it was given (train-mode BatchNorm would
    otherwise update the caller's running statistics).
    """
    import torch

    in_train = _train_mode_modules(module)
    probe = copy.deepcopy(module)
    torch.manual_seed(0)
    with torch.no_grad():
        alone = probe(torch.from_numpy(np.ascontiguousarray(batch[image_index : image_index + 1])))
        together = probe(torch.from_numpy(np.ascontiguousarray(batch)))[
            image_index : image_index + 1
        ]
    metrics = tap_metrics(together.numpy(), alone.numpy(), logits=True)
    evidence: dict[str, Any] = {
        "batchnorm_in_train_mode": len(in_train["batchnorm"]),
        "dropout_in_train_mode": len(in_train["dropout"]),
        "train_mode_examples": (in_train["batchnorm"] + in_train["dropout"])[:5],
        "batch_size": int(len(batch)),
        "alone_vs_in_batch_max_abs": metrics.max_abs,
        "alone_vs_in_batch_max_abs_norm": metrics.max_abs_norm,
        "alone_vs_in_batch_top1_same": bool(metrics.top1_agreement == 1.0),
        "budget_max_abs_norm": BATCH_BUDGET,
    }
    causes = []
    if in_train["batchnorm"] or in_train["dropout"]:
        causes.append(
            f"model in training mode: {len(in_train['batchnorm'])} BatchNorm and "
            f"{len(in_train['dropout'])} Dropout modules use batch statistics / drop "
            "(call model.eval() before exporting or comparing)"
        )
    if metrics.max_abs_norm > BATCH_BUDGET:
        causes.append(
            f"image {image_index} alone vs inside a batch of {len(batch)}: logits "
            f"max_abs_norm {metrics.max_abs_norm:.3g} > {BATCH_BUDGET:g} (output depends on "
            "the rest of the batch)"
        )
    if causes:
        return Finding("batchnorm", PROBLEM, "; ".join(causes), evidence)
    return Finding(
        "batchnorm",
        OK,
        f"eval mode; image alone vs in a batch of {len(batch)} agree "
        f"(max_abs_norm {metrics.max_abs_norm:.2e})",
        evidence,
    )
