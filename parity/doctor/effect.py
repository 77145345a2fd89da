"""What an input difference does to the model: every tap judged against its budget.

The doctor judges a preprocessing difference (or a residual the search leaves) by its
effect, not by its pixels: the card's torch model runs on both batches, and each tap is
judged against the larger of the fp32 budget (the tolerance file's ``<model>/torch/<tap>``)
and :data:`FLOOR_MARGIN` times the effect of 8-bit rounding itself: the card's own
pipeline rounds its resized pixels to 8 bits where ``tf.image.resize`` keeps floats, a
difference of up to half a step on every pixel that every correct pipeline may have.
Measured on mobilenet_v2's calibrated weights, one 8-bit step on 0.12% of the values
(torchvision v2 on uint8 tensors) moves the stem by max_abs_norm 0.017 and the logits by
0.067, 30-130x the fp32 budget: those weights amplify input noise (fixtures/
tolerances.toml), so the fp32 budgets alone would call every 1-step difference a problem.
Top-1/top-5 agreement counts only for trained weights: the default ``calibrated`` weights
are a seeded init whose logits have near-ties, where any change flips the top-1.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from parity.compare import TapMetrics, TapVerdict, compare_taps, judge
from parity.errors import TapError
from parity.taps import Tap
from parity.tolerances import Budget, TolerancePolicy

#: Budgets of the variant a preprocessing difference is judged as: the fp32 reference.
EFFECT_VARIANT = "torch"
#: Metrics that count only for trained weights.
RANK_METRICS = ("top1_agreement", "top5_overlap")
#: A difference may move a tap this many times as far as 8-bit rounding does. Measured on
#: mobilenet_v2's stem (1-cosine, 7 photos): one step on 0.12% of the values 0.01x; pixels
#: kept as floats (tf.image.resize) vs PIL's rounding 1.0x (the floor itself, seen from the
#: other side: 0.99-1.01x); cv2's fixed-point rounding vs round() 1.5x; floored pixels 2.5x.
FLOOR_MARGIN = 1.25


@dataclasses.dataclass
class Effect:
    """The taps of one batch against the taps of a reference batch, judged."""

    taps: tuple[TapVerdict, ...]
    flips: list[int]
    trained: bool

    @property
    def within(self) -> bool:
        return not any(self.failures(t) for t in self.taps)

    def failures(self, tap: TapVerdict) -> tuple[str, ...]:
        """The budget lines ``tap`` breaks (rank metrics only with trained weights)."""
        if self.trained:
            return tap.failures
        return tuple(f for f in tap.failures if f.split()[0] not in RANK_METRICS)

    @property
    def first_failure(self) -> TapVerdict | None:
        return next((t for t in self.taps if self.failures(t)), None)

    @property
    def worst(self) -> TapVerdict:
        return max(self.taps, key=lambda t: t.metrics.max_abs_norm / _limit(t))

    def summary(self, images: int) -> str:
        """One clause: within budget, or the first tap over it; flips when they count."""
        first = self.first_failure
        worst = self.worst
        if first is None:
            text = (
                "every tap within its budget (fp32, or what rounding to 8 bits moves it; "
                f"worst '{worst.tap.name}' max_abs_norm "
                f"{worst.metrics.max_abs_norm:.2g} <= {_limit(worst):.2g})"
            )
        else:
            text = f"first over budget at '{first.tap.name}' ({'; '.join(self.failures(first))})"
        if self.trained:
            text += f", {len(self.flips)}/{images} top-1 flips"
        elif self.flips:
            text += (
                f" ({len(self.flips)}/{images} top-1 flips not counted: the card's weights "
                "are untrained, their logits have near-ties)"
            )
        return text

    def to_evidence(self) -> dict[str, Any]:
        worst = self.worst
        return {
            "within_budgets": self.within,
            "budget_source": dict(worst.budget.sources),
            "worst_tap": worst.tap.name,
            "worst_max_abs_norm": worst.metrics.max_abs_norm,
            "logits_max_abs_norm": self.taps[-1].metrics.max_abs_norm,
            "logits_sqnr_db": self.taps[-1].metrics.sqnr_db,
            "top1_flips": len(self.flips),
            "top1_flips_count": self.trained,
        }


def _limit(tap: TapVerdict) -> float:
    return float(tap.budget.limits.get("max_abs_norm", np.inf))


class ModelJudge:
    """Runs one torch model with the card's taps and judges batches against each other.

    Args:
        module: the torch model (a copy is put in eval mode if it is in training mode).
        taps: the card's taps; a model without those modules is judged on its output.
        policy: the tolerance policy (budgets).
        model: the card's name (budget lookup).
        trained: whether the weights are trained (top-1/top-5 count).
    """

    def __init__(
        self, module: Any, taps: Sequence[Tap], policy: TolerancePolicy, model: str, trained: bool
    ) -> None:
        self.module = copy.deepcopy(module).eval() if module.training else module
        self.taps = tuple(taps)
        self.policy = policy
        self.model = model
        self.trained = trained
        self._cache: dict[str, dict[str, np.ndarray]] = {}
        self._floor: dict[str, TapMetrics] = {}

    def set_floor(self, rounded: np.ndarray, unrounded: np.ndarray) -> None:
        """Measure what 8-bit rounding does to each tap (the same images, both ways)."""
        ref, got = self._cached(unrounded), self._cached(rounded)
        verdict = compare_taps(self.model, EFFECT_VARIANT, self.taps, ref, got, self.policy)
        self._floor = {t.tap.name: t.metrics for t in verdict.taps}

    def _budget(self, tap: TapVerdict) -> Budget:
        """The tap's fp32 budget, widened to :data:`FLOOR_MARGIN` x the rounding floor."""
        floor = self._floor.get(tap.tap.name)
        if floor is None:
            return tap.budget
        limits, sources = dict(tap.budget.limits), dict(tap.budget.sources)
        widened = {
            "max_abs_norm": FLOOR_MARGIN * floor.max_abs_norm,
            "min_cosine": 1.0 - FLOOR_MARGIN * (1.0 - floor.cosine),
            "min_sqnr_db": floor.sqnr_db - 10.0 * float(np.log10(FLOOR_MARGIN)),
        }
        for key, value in widened.items():
            if key not in limits:
                continue
            looser = value > limits[key] if key == "max_abs_norm" else value < limits[key]
            if looser:
                limits[key], sources[key] = value, f"{FLOOR_MARGIN:g}x 8-bit rounding"
        return Budget(limits, sources)

    def outputs(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Tap outputs of ``batch`` (NCHW float32); the last tap is the logits."""
        from parity.execute import make_runner
        from parity.variants import VARIANTS

        feed = np.ascontiguousarray(batch, dtype=np.float32)
        with make_runner(VARIANTS["torch"], self.module, 0) as runner:
            try:
                return runner.run(feed, self.taps)
            except TapError:  # not the card's module tree: judge the model's output
                self.taps = (Tap("logits", "", "output", "logits"),)
                return runner.run(feed, self.taps)

    def _cached(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        key = hashlib.sha1(np.ascontiguousarray(batch, dtype=np.float32).tobytes()).hexdigest()
        if key not in self._cache:
            if len(self._cache) >= 4:
                del self._cache[next(iter(self._cache))]
            self._cache[key] = self.outputs(batch)
        return self._cache[key]

    def effect(self, reference: np.ndarray, batch: np.ndarray) -> Effect:
        """``batch`` judged against ``reference`` (NCHW; of another size: on the logits)."""
        ref, got = self._cached(reference), self._cached(batch)
        taps = self.taps if batch.shape == reference.shape else self.taps[-1:]
        verdict = compare_taps(self.model, EFFECT_VARIANT, taps, ref, got, self.policy)
        judged = []
        for tap in verdict.taps:
            budget = self._budget(tap)
            judged.append(TapVerdict(tap.tap, tap.metrics, budget, judge(tap.metrics, budget)))
        logits_ref, logits_got = ref[self.taps[-1].name], got[self.taps[-1].name]
        flips = [
            i
            for i in range(len(batch))
            if logits_ref[i].reshape(-1).argmax() != logits_got[i].reshape(-1).argmax()
        ]
        return Effect(tuple(judged), flips, self.trained)


__all__ = ["EFFECT_VARIANT", "Effect", "ModelJudge"]
