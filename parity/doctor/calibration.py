"""``calibration``: int8 calibration data against the real inputs, per tap."""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import numpy as np

from parity.compare import tap_metrics
from parity.doctor.findings import OK, PROBLEM, Finding
from parity.errors import ParityError
from parity.preprocess import PreprocessSpec

#: Session -> (calibration images, images) -> each tap's SQNR with the images calibration:
#: the baseline of every candidate, converted once per session.
_BASELINE_SQNR: weakref.WeakKeyDictionary[Any, dict[Any, dict[str, float]]] = (
    weakref.WeakKeyDictionary()
)


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
        memo = _BASELINE_SQNR.setdefault(session, {})
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
