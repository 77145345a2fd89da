"""The shared-reference metrics equal the plain formulas on real taps (no verdict moves).

:class:`~parity.compare.ReferenceTap` computes the reference side once and each variant in
a few passes; here every metric of every tap is checked, to 1e-12 relative, against the
textbook float64 formulas the comparison has always used, on torch's taps of
mobilenet_v2 and ONNX Runtime's (fp32 noise) and a float16 round trip of torch's
(quantisation-sized error).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

from parity.compare import REL_FLOOR, TapMetrics, compare_taps, prepare_reference
from parity.harness import Session
from parity.variants import VARIANTS

pytestmark = [pytest.mark.torch, pytest.mark.onnxruntime]


def formulas(reference: np.ndarray, obtained: np.ndarray, logits: bool) -> TapMetrics:
    """Every metric written out plainly in float64: the definition the fast path must meet."""
    ref = reference.astype(np.float64).reshape(len(reference), -1)
    got = obtained.astype(np.float64).reshape(len(obtained), -1)
    diff = np.abs(got - ref)
    scale = np.maximum(np.abs(ref).max(axis=1), np.finfo(np.float64).tiny)
    norm = diff.max(axis=1) / scale
    worst = int(np.argmax(norm))
    rel = (diff / np.maximum(np.abs(ref), REL_FLOOR * scale[:, None])).max(axis=1)
    noise = (diff**2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sqnr = np.where(noise > 0, 10 * np.log10((ref**2).sum(axis=1) / noise), np.inf)
        denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
        cosine = np.where(denom > 0, (ref * got).sum(axis=1) / denom, 1.0)
    top1 = top5 = None
    if logits:
        top1 = float(np.mean(ref.argmax(axis=1) == got.argmax(axis=1)))
        a, b = np.argsort(-ref, axis=1)[:, :5], np.argsort(-got, axis=1)[:, :5]
        top5 = float(np.mean([len(set(x) & set(y)) / 5 for x, y in zip(a, b, strict=True)]))
    return TapMetrics(
        float(diff.max()), float(norm.max()), float(rel.max()), float(diff.mean()),
        float(np.sqrt((diff**2).mean())), float(cosine.min()), float(sqnr.min()),
        float(scale[worst]), worst, top1, top5,
    )  # fmt: skip


@pytest.mark.parametrize("source", ["ort_dynamo", "float16"])
def test_metrics_equal_the_formulas_on_real_taps(
    session_for: Callable[[str], Session], source: str
):
    session = session_for("mobilenet_v2")
    if source == "float16":
        reference = session.reference
        obtained = {k: v.astype(np.float16).astype(np.float32) for k, v in reference.items()}
    else:
        obtained = session.outputs(VARIANTS[source])[0]
    prepared = prepare_reference(session.reference, session.taps)
    verdict = compare_taps("mobilenet_v2", source, session.taps, prepared, obtained, session.policy)
    for tap_verdict in verdict.taps:
        name = tap_verdict.tap.name
        expected = formulas(session.reference[name], obtained[name], tap_verdict.tap.is_logits)
        for field, want in dataclasses.asdict(expected).items():
            got = getattr(tap_verdict.metrics, field)
            if want is None or isinstance(want, int):
                assert got == want, (name, field)
            else:
                assert got == pytest.approx(want, rel=1e-12, abs=0), (name, field)
        # the error is real, not zero: the comparison is exercised, not short-circuited
        assert 0 < tap_verdict.metrics.max_abs_norm < 0.1, name
