"""``calibration``: int8 calibration data against the real inputs, per tap."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from parity.compare import tap_metrics
from parity.doctor.findings import OK, PROBLEM, Finding
from parity.errors import ParityError
from parity.preprocess import PreprocessSpec


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
    session: Any, path: Path, options: dict[str, Any], images: int
) -> dict[str, float]:
    """Each tap's SQNR vs torch of the int8 TFLite file ``path`` on the first ``images``."""
    from parity.variants import VARIANTS

    variant = VARIANTS["litert_int8"]
    runner = variant.runner_class()(variant.name, path, threads=session.config.threads, **options)
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
    loss_db: float = 2.0,
    workdir: Path | None = None,
) -> Finding:
    """int8 calibration data vs the card's calibration images, through LiteRT int8.

    The baseline is the ``litert_int8`` artifact parity ships (the Keras twin's SavedModel
    converted to full int8, calibrated with the card's calibration images); the candidate
    is the same SavedModel converted the same way, calibrated with ``calibration``
    ("noise": standard normal noise of the calibration batch's shape, or an NCHW float32
    batch of your own; "images" is the baseline itself). Both run on ``images`` fixtures
    and are compared per tap by SQNR vs torch. A tap losing more than ``loss_db`` dB, or
    calibration statistics unlike the inputs', is a problem.
    """
    import tempfile

    from parity.build import artifact
    from parity.export.tflite import convert_saved_model
    from parity.variants import VARIANTS

    baseline = session.context.calibration_batch()
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
    shipped = session.artifact(VARIANTS["litert_int8"])
    options = dict(shipped.metadata.get("runner_options", {}))
    base_sqnr = _int8_tap_sqnr(session, shipped.path, options, images)
    if candidate is baseline:
        cand_sqnr = base_sqnr
    else:
        saved = artifact(session.context, "keras_savedmodel", session.bundle)
        nhwc = np.ascontiguousarray(candidate.transpose(0, 2, 3, 1))
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            converted = Path(tmp) / "candidate.tflite"
            converted.write_bytes(convert_saved_model(saved.path.parent, "int8", nhwc))
            cand_sqnr = _int8_tap_sqnr(session, converted, options, images)
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
