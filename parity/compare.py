"""Metrics and the verdict: numpy only.

Errors are judged relative to each tap's own scale (``max |reference|`` of that image):
a tap whose activations are 1e-4 and one whose activations are 40 get the same budget,
the one :mod:`parity.tolerances` resolves for it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from parity.taps import Tap
from parity.tolerances import BUDGET_KEYS, Budget, TolerancePolicy

#: Guard for relative error: |a-b| / max(|ref|, REL_FLOOR * scale).
REL_FLOOR = 1e-3
#: float64 values per block of a comparison (1 MiB): each pass over a block hits cache.
_BLOCK = 1 << 17


@dataclasses.dataclass(frozen=True)
class TapMetrics:
    """Error statistics of one tap, worst case over the images of a batch.

    ``max_abs_norm`` is ``max |got - ref| / max |ref|`` and is the headline figure; the
    ``worst_image`` is the batch index where it is largest.
    """

    max_abs: float
    max_abs_norm: float
    max_rel: float
    mean_abs: float
    rmse: float
    cosine: float
    sqnr_db: float
    scale: float
    worst_image: int
    top1_agreement: float | None = None
    top5_overlap: float | None = None

    def get(self, name: str) -> float | None:
        """A metric by name (``None`` if it does not apply to this tap)."""
        value: float | None = getattr(self, name)
        return value


@dataclasses.dataclass(frozen=True, eq=False)
class ReferenceTap:
    """One tap of the reference with the statistics every comparison against it reuses.

    Computed once per tap and shared by every variant (and by per-image checks through
    :meth:`rows`), so a variant costs a few passes over its own tensor only.
    """

    shape: tuple[int, ...]
    #: float64, one row per image.
    values: np.ndarray
    #: ``max |ref|`` per image (at least the smallest float64).
    scale: np.ndarray
    #: The denominator of the guarded relative error: ``max(|ref|, REL_FLOOR * scale)``.
    rel_guard: np.ndarray
    #: ``sum ref**2`` and ``||ref||`` per image.
    signal: np.ndarray
    norm: np.ndarray
    #: Logits only: the argmax and the top-5 classes per image.
    argmax: np.ndarray | None = None
    top: np.ndarray | None = None

    @classmethod
    def of(cls, reference: np.ndarray, *, logits: bool = False) -> ReferenceTap:
        """Prepare one batch of a tap (first axis = images)."""
        ref = np.ascontiguousarray(reference, dtype=np.float64).reshape(len(reference), -1)
        magnitude = np.abs(ref)
        scale = np.maximum(magnitude.max(axis=1), np.finfo(np.float64).tiny)
        np.maximum(magnitude, REL_FLOOR * scale[:, None], out=magnitude)
        signal = np.einsum("ij,ij->i", ref, ref)
        argmax = top = None
        if logits:
            argmax = ref.argmax(axis=1)
            top = np.argsort(-ref, axis=1)[:, : min(5, ref.shape[1])]
        return cls(
            tuple(reference.shape), ref, scale, magnitude, signal, np.sqrt(signal), argmax, top
        )

    def rows(self, index: slice) -> ReferenceTap:
        """The same statistics for a slice of the images (views, no copy)."""
        shape = (len(self.values[index]), *self.shape[1:])
        argmax = None if self.argmax is None else self.argmax[index]
        top = None if self.top is None else self.top[index]
        return ReferenceTap(
            shape, self.values[index], self.scale[index], self.rel_guard[index],
            self.signal[index], self.norm[index], argmax, top,
        )  # fmt: skip

    def metrics(self, obtained: np.ndarray) -> TapMetrics:
        """Compare a runtime's batch of this tap with the reference.

        One pass per statistic over cache-sized blocks of the difference (the float64
        difference of a whole tap would not fit in cache, and every pass would go to
        memory); ``got . ref`` and ``|got|^2`` follow from the reference's sums and the
        difference's, so ``got`` itself is read once.
        """
        if tuple(obtained.shape) != self.shape:
            raise ValueError(f"shape {obtained.shape} does not match the reference {self.shape}")
        ref = self.values
        images, size = ref.shape
        got = obtained.reshape(images, size)
        sums = np.zeros((3, images))  # ref.diff, diff.diff, sum |diff|
        peaks = np.zeros((2, images))  # max |diff|, max relative
        rows = max(1, _BLOCK // size)
        cols = min(size, _BLOCK)
        buffer = np.empty(rows * cols)
        for r0 in range(0, images, rows):
            r = slice(r0, r0 + rows)
            for c0 in range(0, size, cols):
                c = slice(c0, c0 + cols)
                block = ref[r, c]
                diff = np.subtract(got[r, c], block, out=buffer[: block.size].reshape(block.shape))
                sums[0, r] += np.einsum("ij,ij->i", block, diff)
                sums[1, r] += np.einsum("ij,ij->i", diff, diff)
                np.abs(diff, out=diff)
                np.maximum(peaks[0, r], diff.max(axis=1), out=peaks[0, r])
                sums[2, r] += diff.sum(axis=1)
                np.divide(diff, self.rel_guard[r, c], out=diff)
                np.maximum(peaks[1, r], diff.max(axis=1), out=peaks[1, r])
        ref_diff, noise, sum_abs = sums
        max_abs, rel = peaks
        top1 = top5 = None
        if self.argmax is not None and self.top is not None:
            logits = got.astype(np.float64)
            top1 = float(np.mean(self.argmax == logits.argmax(axis=1)))
            top5 = _top_overlap(self.top, logits)
        norm = max_abs / self.scale
        worst = int(np.argmax(norm))
        with np.errstate(divide="ignore", invalid="ignore"):
            sqnr = np.where(noise > 0, 10 * np.log10(self.signal / noise), np.inf)
            # got.ref = ref.ref + ref.diff; got.got = ref.ref + 2 ref.diff + diff.diff
            denom = self.norm * np.sqrt(self.signal + 2 * ref_diff + noise)
            cosine = np.where(denom > 0, (self.signal + ref_diff) / denom, 1.0)
        return TapMetrics(
            max_abs=float(max_abs.max()),
            max_abs_norm=float(norm.max()),
            max_rel=float(rel.max()),
            mean_abs=float(sum_abs.sum() / ref.size),
            rmse=float(np.sqrt(noise.sum() / ref.size)),
            cosine=float(cosine.min()),
            sqnr_db=float(sqnr.min()),
            scale=float(self.scale[worst]),
            worst_image=worst,
            top1_agreement=top1,
            top5_overlap=top5,
        )


def _top_overlap(ref_top: np.ndarray, got: np.ndarray) -> float:
    """Mean overlap of ``got``'s top-k classes with the reference's top-k."""
    k = ref_top.shape[1]
    got_top = np.argsort(-got, axis=1)[:, :k]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ref_top, got_top, strict=True)]))


def tap_metrics(reference: np.ndarray, obtained: np.ndarray, *, logits: bool = False) -> TapMetrics:
    """Compare two batches of one tap (first axis = images)."""
    if reference.shape != obtained.shape:
        raise ValueError(f"shape {obtained.shape} does not match the reference {reference.shape}")
    return ReferenceTap.of(reference, logits=logits).metrics(obtained)


def prepare_reference(
    reference: Mapping[str, np.ndarray], taps: Sequence[Tap]
) -> dict[str, ReferenceTap]:
    """The reference's per-tap statistics, once, for :func:`compare_taps` on many variants."""
    return {tap.name: ReferenceTap.of(reference[tap.name], logits=tap.is_logits) for tap in taps}


@dataclasses.dataclass(frozen=True)
class TapVerdict:
    """Metrics of one tap against its budget."""

    tap: Tap
    metrics: TapMetrics
    budget: Budget
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures


def judge(metrics: TapMetrics, budget: Budget) -> tuple[str, ...]:
    """The budget lines a tap breaks, each as 'metric value vs limit'."""
    if budget.missing:
        return (budget.missing,)
    failures = []
    for key, limit in budget.limits.items():
        metric, direction = BUDGET_KEYS[key]
        value = metrics.get(metric)
        if value is None:
            continue
        broken = value > limit if direction == "max" else value < limit
        if not (broken or math.isnan(value)):
            continue
        if metric == "cosine":  # 0.99999 vs 0.9999999 reads better as a deficit
            failures.append(f"1-cosine {1.0 - value:.3g} > {1.0 - limit:.3g}")
        else:
            op = ">" if direction == "max" else "<"
            failures.append(f"{metric} {value:.3g} {op} {limit:.3g}")
    return tuple(failures)


@dataclasses.dataclass(frozen=True)
class VariantVerdict:
    """All taps of one runtime variant, in forward order."""

    variant: str
    taps: tuple[TapVerdict, ...]

    @property
    def passed(self) -> bool:
        return all(t.passed for t in self.taps)

    @property
    def first_failure(self) -> TapVerdict | None:
        """The first tap in forward order that breaks its budget: where drift starts."""
        return next((t for t in self.taps if not t.passed), None)

    def explain(self, image_names: Sequence[str] = ()) -> str:
        """One line naming the first divergent tap and why, or 'all taps within budget'."""
        first = self.first_failure
        if first is None:
            return "all taps within budget"
        index = self.taps.index(first)
        why = "; ".join(first.failures)
        where = f"tap '{first.tap.name}' ({first.tap.describe()})"
        image = first.metrics.worst_image
        if image_names:
            where += f", worst on image '{image_names[image]}'"
        if index > 0:
            before = self.taps[index - 1].metrics.max_abs_norm
            growth = first.metrics.max_abs_norm / before if before > 0 else math.inf
            where += f"; error grows {growth:.3g}x from '{self.taps[index - 1].tap.name}'"
        return f"first divergent {where}: {why}"


def compare_taps(
    model: str,
    variant: str,
    taps: Sequence[Tap],
    reference: Mapping[str, np.ndarray] | Mapping[str, ReferenceTap],
    obtained: Mapping[str, np.ndarray],
    policy: TolerancePolicy,
) -> VariantVerdict:
    """Judge every tap of a variant against the reference.

    ``reference``: raw arrays, or :func:`prepare_reference` of them when several variants
    are judged against the same reference (same metrics, the reference side done once).
    """
    verdicts = []
    for tap in taps:
        if tap.name not in obtained:
            raise KeyError(f"runtime {variant} returned no tensor for tap '{tap.name}'")
        ref, got = reference[tap.name], obtained[tap.name]
        if tuple(ref.shape) != got.shape:
            raise ValueError(
                f"{variant}: tap '{tap.name}' has shape {got.shape}, reference {ref.shape}"
            )
        if not isinstance(ref, ReferenceTap):
            ref = ReferenceTap.of(ref, logits=tap.is_logits)
        metrics = ref.metrics(got)
        budget = policy.budget(model, variant, tap.name)
        verdicts.append(TapVerdict(tap, metrics, budget, judge(metrics, budget)))
    return VariantVerdict(variant, tuple(verdicts))


def metrics_to_dict(metrics: TapMetrics) -> dict[str, Any]:
    """JSON-safe form (inf as the string 'inf')."""
    out: dict[str, Any] = {}
    for key, value in dataclasses.asdict(metrics).items():
        out[key] = "inf" if isinstance(value, float) and math.isinf(value) else value
    return out


def worst_of(metrics: Sequence[TapMetrics]) -> TapMetrics:
    """Worst case over per-image metrics (top-k agreement is averaged)."""
    worst = max(range(len(metrics)), key=lambda i: metrics[i].max_abs_norm)
    top1 = [m.top1_agreement for m in metrics if m.top1_agreement is not None]
    top5 = [m.top5_overlap for m in metrics if m.top5_overlap is not None]
    return TapMetrics(
        max_abs=max(m.max_abs for m in metrics),
        max_abs_norm=metrics[worst].max_abs_norm,
        max_rel=max(m.max_rel for m in metrics),
        mean_abs=float(np.mean([m.mean_abs for m in metrics])),
        rmse=float(np.sqrt(np.mean([m.rmse**2 for m in metrics]))),
        cosine=min(m.cosine for m in metrics),
        sqnr_db=min(m.sqnr_db for m in metrics),
        scale=metrics[worst].scale,
        worst_image=worst,
        top1_agreement=float(np.mean(top1)) if top1 else None,
        top5_overlap=float(np.mean(top5)) if top5 else None,
    )


def merge_verdicts(
    per_image: Sequence[VariantVerdict], policy: TolerancePolicy, model: str
) -> VariantVerdict:
    """One verdict over many images: worst metrics per tap, judged again."""
    first = per_image[0]
    taps = []
    for index, tap_verdict in enumerate(first.taps):
        metrics = worst_of([v.taps[index].metrics for v in per_image])
        budget = policy.budget(model, first.variant, tap_verdict.tap.name)
        taps.append(TapVerdict(tap_verdict.tap, metrics, budget, judge(metrics, budget)))
    return VariantVerdict(first.variant, tuple(taps))
