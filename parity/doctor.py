"""``parity doctor``: name the usual causes of torch-vs-deployment drift, with evidence.

Each check returns a :class:`Finding` (``ok`` / ``problem`` / ``skipped``), a one-line
cause and the evidence behind it:

* ``preprocessing``: a user's preprocessing function against the card's spec. Candidate
  specs that differ from the card in one factor (resize filter, antialias, channel order,
  normalisation, value range, layout, crop/resize order) are tried on the fixture images;
  the one reproducing the user's tensors names the difference, and the torch model shows
  what it costs (top-1 flips, logits ``max_abs_norm``).
* ``batchnorm``: BatchNorm/Dropout modules left in training mode, and an image run alone
  vs inside the fixture batch (eval mode agrees to fp32 noise; train mode does not).
* ``port_lint``: a Keras port's BatchNormalization epsilon vs torch's 1e-5, stride-2
  convolutions with ``padding='same'`` (TF pads bottom/right only), and
  ``AveragePooling2D(padding='same')`` (TF excludes the padding from the average).
* ``delegates``: XNNPACK on vs off (LiteRT fp32) and ONNX Runtime graph optimisations
  all vs disabled, per tap; both of a pair are fp32, so they must agree to fp32 noise.
* ``calibration``: statistics of the int8 calibration batch vs the fixture batch
  (mean/std/range); a set that does not look like the real inputs (e.g. noise) is named.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity.compare import tap_metrics
from parity.errors import ParityError
from parity.preprocess import PreprocessSpec, preprocess_batch
from parity.zoo import PRESETS, ModelCard

OK, PROBLEM, SKIPPED = "ok", "problem", "skipped"
CHECKS = ("preprocessing", "batchnorm", "port_lint", "calibration", "delegates")

#: A user preprocessing function: image path -> CHW/HWC (or 1xCHW/1xHWC) float array.
UserPreprocess = Callable[[Path], Any]

#: Max abs difference (tensor units) under which two preprocessings are "the same".
PREPROCESS_ATOL = 1e-4
#: Image alone vs inside a batch, logits max_abs_norm: fp32 GEMM-blocking noise only.
BATCH_BUDGET = 1e-4
#: Two fp32 executions of one artifact, per-tap max_abs_norm (fixtures/tolerances.toml).
DELEGATE_BUDGET = 5e-4
#: (variant, variant) pairs differing only in delegate / graph optimisation.
DELEGATE_PAIRS = (("litert_fp32", "litert_fp32_noxnn"), ("ort_dynamo", "ort_dynamo_noopt"))
#: torch ``nn.BatchNorm2d`` default epsilon.
TORCH_BN_EPS = 1e-5


@dataclasses.dataclass
class Finding:
    """One check's verdict: status, one-line cause, and the evidence for it."""

    name: str
    status: str
    cause: str
    evidence: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status != PROBLEM

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "cause": self.cause,
            "evidence": _jsonable(self.evidence),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


# --------------------------------------------------------------------------- preprocessing


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


# --------------------------------------------------------------------------- batchnorm


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


# --------------------------------------------------------------------------- port lint


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
    counts = {"batchnorm": 0, "stride2_conv": 0, "avg_pool": 0}
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
        elif kind in ("AveragePooling2D",):
            counts["avg_pool"] += 1
            if layer.padding == "same":
                avg_same.append(f"{layer.name} (pool {tuple(layer.pool_size)})")
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
    if causes:
        return Finding("port_lint", PROBLEM, "; ".join(causes), evidence)
    return Finding(
        "port_lint",
        OK,
        f"{counts['batchnorm']} BatchNorm epsilons, {counts['stride2_conv']} strided convs, "
        f"{counts['avg_pool']} average pools match torch semantics",
        evidence,
    )


# --------------------------------------------------------------------------- calibration


def _stats(batch: np.ndarray) -> dict[str, Any]:
    channels = batch.reshape(batch.shape[0], batch.shape[1], -1)  # NCHW
    return {
        "mean": [round(float(v), 4) for v in channels.mean(axis=(0, 2))],
        "std": [round(float(v), 4) for v in channels.std(axis=(0, 2))],
        "min": round(float(batch.min()), 4),
        "max": round(float(batch.max()), 4),
    }


def attainable_range(spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (RGB/BGR as produced) min and max an 8-bit image can give under ``spec``."""
    mean, std = np.asarray(spec.mean), np.asarray(spec.std)
    ends = np.stack([(0.0 - mean) / std, (255.0 * spec.scale - mean) / std])
    low, high = ends.min(axis=0), ends.max(axis=0)
    if spec.channel_order == "BGR":
        low, high = low[::-1], high[::-1]
    return low, high


def diagnose_calibration_stats(
    calibration: np.ndarray,
    fixtures: np.ndarray,
    spec: PreprocessSpec,
    mean_tolerance: float = 1.0,
    outside_tolerance: float = 1e-3,
) -> Finding:
    """Compare the int8 calibration batch with the real inputs (both NCHW float32).

    Problems: values no 8-bit image can produce under ``spec`` (more than
    ``outside_tolerance`` of them: noise, a different normalisation), or a per-channel
    mean more than ``mean_tolerance`` fixture standard deviations away. Either gives int8
    activation scales fitted to the wrong distribution.
    """
    cal, fix = _stats(calibration), _stats(fixtures)
    fix_std = np.maximum(np.asarray(fix["std"]), 1e-6)
    mean_shift = np.abs(np.asarray(cal["mean"]) - np.asarray(fix["mean"])) / fix_std
    low, high = attainable_range(spec)
    eps = 1e-4
    outside = float(
        np.mean(
            (calibration < low[None, :, None, None] - eps)
            | (calibration > high[None, :, None, None] + eps)
        )
    )
    evidence: dict[str, Any] = {
        "calibration": {"images": int(len(calibration)), **cal},
        "fixtures": {"images": int(len(fixtures)), **fix},
        "attainable_range": [
            [round(float(a), 3), round(float(b), 3)] for a, b in zip(low, high, strict=True)
        ],
        "fraction_outside_attainable": round(outside, 5),
        "mean_shift_in_fixture_stds": [round(float(v), 3) for v in mean_shift],
    }
    causes = []
    if outside > outside_tolerance:
        causes.append(
            f"{outside:.1%} of calibration values lie outside the range any image gives "
            f"under the card's preprocessing (calibration [{cal['min']:.3g}, {cal['max']:.3g}], "
            f"fixtures [{fix['min']:.3g}, {fix['max']:.3g}]): not preprocessed images (noise?)"
        )
    if (mean_shift > mean_tolerance).any():
        causes.append(f"per-channel mean shifted by up to {mean_shift.max():.2f} fixture stds")
    if causes:
        return Finding(
            "calibration",
            PROBLEM,
            "int8 calibration data does not match the real input distribution: "
            + "; ".join(causes),
            evidence,
        )
    return Finding(
        "calibration",
        OK,
        "calibration batch lies in the preprocessed-image range and its per-channel means "
        f"are within {mean_tolerance:g} fixture std of the fixtures' "
        f"(max shift {mean_shift.max():.2f})",
        evidence,
    )


def _int8_tap_sqnr(
    session: Any, keras_model: Any, representative: np.ndarray, images: int, out: Path
) -> dict[str, float]:
    """Convert ``keras_model`` to int8 with ``representative`` (NHWC), SQNR per tap vs torch."""
    from parity.export.tflite import convert_keras_model, output_layer
    from parity.variants import VARIANTS

    out.write_bytes(convert_keras_model(keras_model, "int8", representative))
    keras_artifact = session.artifact(VARIANTS["keras"])
    options = dict(keras_artifact.metadata.get("runner_options", {}))
    options["output_layer"] = output_layer(keras_model)
    variant = VARIANTS["litert_int8"]
    runner = variant.runner_class()(variant.name, out, threads=session.config.threads, **options)
    with runner:
        obtained = runner.run(session.batch[:images], session.taps)
    reference = session.reference
    names = [t.name for t in session.taps]
    return {
        tap: tap_metrics(reference[tap][:images], obtained[tap], logits=i == len(names) - 1).sqnr_db
        for i, tap in enumerate(names)
        if tap in obtained
    }


def diagnose_calibration(
    session: Any,
    calibration: str | np.ndarray = "images",
    images: int = 4,
    calibration_images: int = 8,
    loss_db: float = 2.0,
    workdir: Path | None = None,
) -> Finding:
    """int8 calibration data vs the card's calibration images, through LiteRT int8.

    Converts the cached Keras artifact to full-int8 TFLite twice: calibrated with the
    card's calibration images (the baseline) and with ``calibration`` ("noise": standard
    normal noise of the same shape, or an NCHW float32 batch of your own), runs both on
    ``images`` fixtures and compares per-tap SQNR vs torch. A tap losing more than
    ``loss_db`` dB, or calibration statistics unlike the inputs', is a problem.
    """
    import tempfile

    from parity import lazy
    from parity.variants import VARIANTS

    baseline = session.context.calibration_batch()[:calibration_images]
    if isinstance(calibration, str):
        if calibration == "images":
            candidate = baseline
        elif calibration == "noise":
            rng = np.random.default_rng(0)
            candidate = rng.standard_normal(baseline.shape, dtype=np.float32)
        else:
            raise ParityError(f"unknown calibration {calibration!r}; use images, noise or a batch")
        label = calibration
    else:
        candidate, label = np.asarray(calibration, dtype=np.float32), "user batch"
    stats = diagnose_calibration_stats(candidate, session.batch, session.card.preprocess)
    lazy.tensorflow()
    keras = lazy.require("keras")
    model = keras.models.load_model(session.artifact(VARIANTS["keras"]).path, compile=False)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        nhwc = np.ascontiguousarray(baseline.transpose(0, 2, 3, 1))
        memo = session.__dict__.setdefault("_doctor_int8_images_sqnr", {})
        key = (calibration_images, images)
        if key not in memo:  # the baseline is the same for every candidate: convert once
            memo[key] = _int8_tap_sqnr(session, model, nhwc, images, Path(tmp) / "images.tflite")
        base_sqnr = memo[key]
        if candidate is baseline:
            cand_sqnr = base_sqnr
        else:
            nhwc = np.ascontiguousarray(candidate.transpose(0, 2, 3, 1))
            cand_sqnr = _int8_tap_sqnr(session, model, nhwc, images, Path(tmp) / "cand.tflite")
    loss = {tap: base_sqnr[tap] - cand_sqnr[tap] for tap in base_sqnr}
    worst = sorted(loss, key=lambda t: -loss[t])[:5]
    evidence: dict[str, Any] = {
        "calibration": label,
        "sqnr_db_images_calibration": {t: round(v, 1) for t, v in base_sqnr.items()},
        f"sqnr_db_{label.replace(' ', '_')}_calibration": {
            t: round(v, 1) for t, v in cand_sqnr.items()
        },
        "worst_layers_db_lost": {t: round(loss[t], 1) for t in worst},
        **{f"stats_{k}": v for k, v in stats.evidence.items()},
    }
    causes = []
    lost = [t for t in worst if loss[t] > loss_db]
    if lost:
        causes.append(
            f"int8 calibrated with {label} loses up to {loss[lost[0]]:.1f} dB SQNR vs "
            f"calibrating with the card's images; worst layers: "
            + ", ".join(f"{t} (-{loss[t]:.1f} dB)" for t in lost)
        )
    if stats.status == PROBLEM:
        causes.append(stats.cause)
    if causes:
        return Finding("calibration", PROBLEM, "; ".join(causes), evidence)
    return Finding(
        "calibration",
        OK,
        f"int8 calibrated with {label}: SQNR within {loss_db:g} dB of image calibration on "
        f"every tap (logits {cand_sqnr.get(list(cand_sqnr)[-1], float('nan')):.1f} dB); "
        + stats.cause,
        evidence,
    )


# --------------------------------------------------------------------------- delegates


def compare_pair(
    first: str,
    second: str,
    taps: Sequence[str],
    outputs_first: dict[str, np.ndarray],
    outputs_second: dict[str, np.ndarray],
    budget: float = DELEGATE_BUDGET,
) -> dict[str, Any]:
    """Per-tap ``max_abs_norm`` of ``second`` vs ``first`` and the first tap over budget."""
    per_tap: dict[str, float] = {}
    first_divergent = None
    for index, tap in enumerate(taps):
        if tap not in outputs_first or tap not in outputs_second:
            continue
        last = index == len(taps) - 1
        metrics = tap_metrics(outputs_first[tap], outputs_second[tap], logits=last)
        per_tap[tap] = metrics.max_abs_norm
        if first_divergent is None and metrics.max_abs_norm > budget:
            first_divergent = tap
    worst = max(per_tap, key=lambda t: per_tap[t]) if per_tap else None
    return {
        "pair": f"{first} vs {second}",
        "first_divergent_tap": first_divergent,
        "worst_tap": worst,
        "worst_max_abs_norm": per_tap[worst] if worst else None,
        "max_abs_norm": per_tap,
    }


def diagnose_delegates(
    session: Any,
    pairs: Sequence[tuple[str, str]] = DELEGATE_PAIRS,
    budget: float = DELEGATE_BUDGET,
) -> Finding:
    """Run each pair of variants on the fixtures and compare them tap by tap."""
    from parity.variants import VARIANTS

    taps = [t.name for t in session.taps]
    results = []
    for first, second in pairs:
        out_first, _ = session.outputs(VARIANTS[first])
        out_second, _ = session.outputs(VARIANTS[second])
        results.append(compare_pair(first, second, taps, out_first, out_second, budget))
    return delegate_finding(results, budget)


def delegate_finding(results: Sequence[dict[str, Any]], budget: float) -> Finding:
    """The finding for :func:`compare_pair` results."""
    evidence: dict[str, Any] = {
        r["pair"]: {
            "first_divergent_tap": r["first_divergent_tap"],
            "worst_tap": r["worst_tap"],
            "worst_max_abs_norm": r["worst_max_abs_norm"],
        }
        for r in results
    }
    evidence["budget_max_abs_norm"] = budget
    bad = [r for r in results if r["first_divergent_tap"] is not None]
    if bad:
        causes = [
            f"{r['pair']}: first divergent tap '{r['first_divergent_tap']}' (max_abs_norm "
            f"{r['max_abs_norm'][r['first_divergent_tap']]:.3g} > {budget:g}; worst "
            f"'{r['worst_tap']}' {r['worst_max_abs_norm']:.3g})"
            for r in bad
        ]
        return Finding("delegates", PROBLEM, "; ".join(causes), evidence)
    return Finding(
        "delegates",
        OK,
        "; ".join(
            f"{r['pair']} agree on every tap (worst max_abs_norm "
            f"{(r['worst_max_abs_norm'] or 0.0):.2e})"
            for r in results
        ),
        evidence,
    )


# --------------------------------------------------------------------------- driver


def run_doctor(
    session: Any,
    checks: Sequence[str] | None = None,
    user_preprocess: UserPreprocess | None = None,
    images: int = 4,
    calibration: str = "images",
) -> list[Finding]:
    """Run the requested checks (all by default) on a :class:`parity.harness.Session`."""
    chosen = list(checks or CHECKS)
    unknown = sorted(set(chosen) - set(CHECKS))
    if unknown:
        raise ParityError(f"unknown doctor check(s) {unknown}; known: {', '.join(CHECKS)}")
    paths = [f.path for f in session.fixtures[:images]]
    findings = []
    for name in chosen:
        if name == "preprocessing":
            if user_preprocess is None:
                findings.append(
                    Finding(name, SKIPPED, "no user preprocessing given (--preprocess mod:fn)")
                )
                continue
            findings.append(
                diagnose_preprocessing(session.card, user_preprocess, paths, session.model().module)
            )
        elif name == "batchnorm":
            findings.append(diagnose_batchnorm(session.model().module, session.batch[:images]))
        elif name == "port_lint":
            if session.card.keras_twin is None:
                findings.append(Finding(name, SKIPPED, "the card has no Keras twin"))
                continue
            from parity import lazy
            from parity.export.keras import build_keras_twin

            lazy.tensorflow()
            twin = build_keras_twin(
                session.card.keras_twin,
                session.model().state_dict_numpy(),
                session.card.preprocess.input_hw,
            )
            findings.append(diagnose_port(twin.model))
        elif name == "calibration":
            findings.append(diagnose_calibration(session, calibration, images=images))
        elif name == "delegates":
            findings.append(diagnose_delegates(session))
    return findings


def evidence_lines(finding: Finding, width: int = 100) -> list[str]:
    """Evidence as short ``key: value`` lines for a table cell."""
    lines = []
    for key, value in finding.evidence.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k}={_short(v)}" for k, v in value.items())
            text = f"{key}: {inner}"
        else:
            text = f"{key}: {_short(value)}"
        lines.append(text if len(text) <= width else text[: width - 3] + "...")
    return lines


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        more = ", ..." if len(value) > 6 else ""
        return "[" + ", ".join(_short(v) for v in value[:6]) + more + "]"
    return str(value)
