"""``preprocessing``: a user's pipeline against the card's spec, explained by search."""

from __future__ import annotations

import dataclasses
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity.compare import tap_metrics
from parity.doctor.findings import OK, PROBLEM, Finding
from parity.errors import ParityError
from parity.preprocess import PreprocessSpec, preprocess_batch
from parity.zoo import PRESETS, ModelCard

#: A user preprocessing function: image path -> CHW/HWC (or 1xCHW/1xHWC) float array.
UserPreprocess = Callable[[Path], Any]

#: Max abs difference (tensor units) under which two preprocessings are "the same".
PREPROCESS_ATOL = 1e-4


def preprocessing_candidates(spec: PreprocessSpec) -> list[tuple[str, PreprocessSpec]]:
    """The card's spec and every spec differing from it in one factor, labelled."""
    out: list[tuple[str, PreprocessSpec]] = [("card spec", spec)]

    def add(label: str, **changes: Any) -> None:
        try:
            candidate = spec.replace(**changes)
        except ValueError:
            return
        if candidate != spec and all(candidate != c for _, c in out):
            out.append((label, candidate))

    for resize_filter in ("bilinear", "bicubic", "nearest", "area"):
        if resize_filter != spec.resize_filter:
            antialias = spec.antialias or resize_filter not in ("nearest", "bilinear")
            add(f"resize filter {resize_filter}", resize_filter=resize_filter, antialias=antialias)
    add(f"antialias {'off' if spec.antialias else 'on'}", antialias=not spec.antialias)
    add(
        f"channel order {'BGR' if spec.channel_order == 'RGB' else 'RGB'}",
        channel_order="BGR" if spec.channel_order == "RGB" else "RGB",
    )
    presets = {"torch mean/std": PRESETS["torchvision-imagenet"], **PRESETS}
    base = {"scale": 1.0 / 255.0, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    for name, preset in presets.items():
        if name == "torchvision-imagenet":
            continue
        fields = {**base, "channel_order": "RGB", **preset}
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
        add(f"normalisation {name!r}", **fields)
    add(
        "value range 0-1 (scale 1/255, no mean/std)", scale=1 / 255, mean=(0.0,) * 3, std=(1.0,) * 3
    )
    add("value range 0-255 (scale 1, no mean/std)", scale=1.0, mean=(0.0,) * 3, std=(1.0,) * 3)
    add(
        f"layout {'NHWC' if spec.layout == 'NCHW' else 'NCHW'}",
        layout="NHWC" if spec.layout == "NCHW" else "NCHW",
    )
    if spec.crop is not None and spec.resize is not None:
        add(
            "crop then resize" if not spec.crop_first else "resize then crop",
            crop_first=not spec.crop_first,
        )
    return out


def _user_batch(user_fn: UserPreprocess, paths: Sequence[Path]) -> np.ndarray:
    tensors = []
    for path in paths:
        array = np.asarray(user_fn(path), dtype=np.float32)
        if array.ndim == 4 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 3:
            raise ParityError(
                f"user preprocessing returned shape {array.shape} for {path}; expected one "
                "image as CHW or HWC (or 1xCHW / 1xHWC)"
            )
        tensors.append(array)
    return np.stack(tensors)


def _logits(module: Any, batch: np.ndarray) -> np.ndarray:
    import torch

    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            return np.asarray(module(torch.from_numpy(np.ascontiguousarray(batch))).numpy())
    finally:
        module.train(was_training)


def diagnose_preprocessing(
    card: ModelCard,
    user_fn: UserPreprocess,
    images: Sequence[Path],
    module: Any | None = None,
) -> Finding:
    """Attribute the difference between ``user_fn``'s tensors and the card's spec.

    Args:
        card: the model card (its ``preprocess`` is the reference).
        user_fn: image path -> one tensor (CHW or HWC, optionally with a batch axis of 1).
        images: image files to compare on (a few fixtures are enough).
        module: the torch model; when given, the drift the difference causes is measured.
    """
    paths = [Path(p) for p in images]
    user = _user_batch(user_fn, paths)
    rows = [
        (label, spec, *_difference(paths, spec, user))
        for label, spec in preprocessing_candidates(card.preprocess)
    ]
    card_max, card_mean = rows[0][2], rows[0][3]
    # ranked by mean abs difference: robust to a few pixels of crop/rounding mismatch
    label, best_spec, best_max, best_mean = min(rows, key=lambda row: (row[3], row[2]))
    evidence: dict[str, Any] = {
        "images": [p.name for p in paths],
        "user_shape": list(user.shape),
        "user_range": [float(user.min()), float(user.max())],
        "max_abs_diff_vs_card": card_max,
        "candidates_mean_abs_diff": {row[0]: row[3] for row in rows},
    }
    if card_max <= PREPROCESS_ATOL:
        return Finding(
            "preprocessing",
            OK,
            f"user preprocessing reproduces the card spec (max abs diff {card_max:.2e})",
            evidence,
        )
    if not np.isfinite(best_mean):
        return Finding(
            "preprocessing",
            PROBLEM,
            f"user tensors have shape {tuple(user.shape[1:])}, no candidate spec produces it "
            f"(card: {card.preprocess.input_hw}, 3 channels)",
            evidence,
        )
    if best_max > PREPROCESS_ATOL:  # no single factor: try the best one plus one more
        combined = _best_pair(rows, card.preprocess, label, best_spec, paths, user)
        if combined is not None and combined[3] < best_mean:
            label, best_spec, best_max, best_mean = combined
    evidence["best_candidate"] = label
    evidence["best_candidate_max_abs_diff"] = best_max
    evidence["best_candidate_mean_abs_diff"] = best_mean
    exact = best_max <= PREPROCESS_ATOL
    cause = f"user preprocessing differs from the card spec by: {label} " + (
        f"(reproduced exactly, max abs diff {best_max:.2e}; card spec {card_max:.2e})"
        if exact
        else f"(closest candidate: mean abs diff {best_mean:.2e} vs {card_mean:.2e} for the "
        f"card spec, max {best_max:.2e}; other small differences remain, e.g. crop rounding)"
    )
    if module is not None:
        reference_spec = card.preprocess.replace(layout="NCHW", dtype="float32")
        reference = preprocess_batch(paths, reference_spec)
        if user.shape != reference.shape:
            evidence["drift"] = (
                f"user tensors are {best_spec.layout}; the torch model takes NCHW, so this "
                "input is rejected or read with the wrong axes (transpose to NCHW)"
            )
        else:
            ref_logits = _logits(module, reference)
            user_logits = _logits(module, user)
            metrics = tap_metrics(ref_logits, user_logits, logits=True)
            flips = [
                paths[i].name
                for i in range(len(paths))
                if ref_logits[i].argmax() != user_logits[i].argmax()
            ]
            evidence["drift"] = {
                "top1_flips": len(flips),
                "flipped_images": flips,
                "logits_max_abs_norm": metrics.max_abs_norm,
                "logits_sqnr_db": metrics.sqnr_db,
            }
            cause += (
                f"; through the torch model: {len(flips)}/{len(paths)} top-1 flips, "
                f"logits max_abs_norm {metrics.max_abs_norm:.3g}"
            )
    return Finding("preprocessing", PROBLEM, cause, evidence)


def _difference(
    paths: Sequence[Path], spec: PreprocessSpec, user: np.ndarray
) -> tuple[float, float]:
    """(max, mean) abs difference of ``user`` from ``spec``'s tensors; inf if shapes differ."""
    expected = preprocess_batch(paths, spec.replace(dtype="float32"))
    if expected.shape != user.shape:
        return float("inf"), float("inf")
    diff = np.abs(expected - user)
    return float(diff.max()), float(diff.mean())


def _best_pair(
    rows: Sequence[tuple[str, PreprocessSpec, float, float]],
    base: PreprocessSpec,
    label: str,
    best: PreprocessSpec,
    paths: Sequence[Path],
    user: np.ndarray,
) -> tuple[str, PreprocessSpec, float, float] | None:
    """The best single-factor candidate combined with each other one: the best pair."""
    names = [f.name for f in dataclasses.fields(PreprocessSpec)]
    best_fields = {n for n in names if getattr(best, n) != getattr(base, n)}
    found: tuple[str, PreprocessSpec, float, float] | None = None
    for row in rows[1:]:
        other_label, other = row[0], row[1]
        changes = {n: getattr(other, n) for n in names if getattr(other, n) != getattr(base, n)}
        if other_label == label or not changes or set(changes) & best_fields:
            continue
        try:
            spec = best.replace(**changes)
        except ValueError:
            continue
        max_diff, mean_diff = _difference(paths, spec, user)
        if found is None or mean_diff < found[3]:
            found = (f"{label} + {other_label}", spec, max_diff, mean_diff)
    return found


def load_user_preprocess(target: str) -> UserPreprocess:
    """``package.module:function`` (the working directory is importable) -> the function."""
    module_name, _, function = target.partition(":")
    if not module_name or not function:
        raise ParityError(f"--preprocess {target!r}: expected module:function")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        fn: UserPreprocess = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as exc:
        raise ParityError(f"--preprocess {target!r}: cannot import ({exc})") from None
    return fn
