"""Metrics, the tolerance policy and the verdict: numpy only.

Errors are judged relative to each tap's own scale (``max |reference|`` of that image):
a tap whose activations are 1e-4 and one whose activations are 40 get the same budget.
Budgets are data (a TOML file, see ``fixtures/tolerances.toml``); the most specific
matching key wins, metric by metric.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity.errors import ToleranceError
from parity.schema import ConfigError, Field, check, number, read_config, string, table
from parity.taps import Tap

# Budget keys and how each is judged: "max" means the metric must be <= the budget,
# "min" means >= . The metric a budget reads is the key without its min_/max_ prefix
# for min_ keys, and the key itself for max_ keys.
BUDGET_KEYS: dict[str, tuple[str, str]] = {
    "max_abs_norm": ("max_abs_norm", "max"),
    "max_rel": ("max_rel", "max"),
    "min_cosine": ("cosine", "min"),
    "min_sqnr_db": ("sqnr_db", "min"),
    "min_top1_agreement": ("top1_agreement", "min"),
    "min_top5_overlap": ("top5_overlap", "min"),
}

_FRACTION = {"gt": 0.0, "le": 1.0, "why": "a budget of 0 or less cannot fail, above 1 cannot pass"}
_MAX = {"ge": 0.0, "why": "a negative maximum cannot pass"}

#: What a ``[budget."model/variant/tap"]`` table may hold: every budget finite and able
#: to fail (a cosine <= 0 or a top-1 agreement of 0 passes anything).
BUDGET_SCHEMA: dict[str, Field] = {
    "notes": string(),
    "max_abs_norm": number(**_MAX),
    "max_rel": number(**_MAX),
    "min_cosine": number(**_FRACTION),
    "min_sqnr_db": number(),  # may be negative: int8 on these weights measures -0.5 dB
    "min_top1_agreement": number(**_FRACTION),
    "min_top5_overlap": number(**_FRACTION),
}
TOLERANCE_SCHEMA = table({"budget": table(values=table(BUDGET_SCHEMA))})

#: Guard for relative error: |a-b| / max(|ref|, REL_FLOOR * scale).
REL_FLOOR = 1e-3


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


def tap_metrics(reference: np.ndarray, obtained: np.ndarray, *, logits: bool = False) -> TapMetrics:
    """Compare two batches of one tap (first axis = images)."""
    if reference.shape != obtained.shape:
        raise ValueError(f"shape {obtained.shape} does not match the reference {reference.shape}")
    ref = reference.astype(np.float64).reshape(len(reference), -1)
    got = obtained.astype(np.float64).reshape(len(obtained), -1)
    diff = np.abs(got - ref)
    scale = np.maximum(np.abs(ref).max(axis=1), np.finfo(np.float64).tiny)
    max_abs = diff.max(axis=1)
    norm = max_abs / scale
    worst = int(np.argmax(norm))
    rel = (diff / np.maximum(np.abs(ref), REL_FLOOR * scale[:, None])).max(axis=1)
    signal = (ref**2).sum(axis=1)
    noise = (diff**2).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sqnr = np.where(noise > 0, 10 * np.log10(signal / noise), np.inf)
        denom = np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1)
        cosine = np.where(denom > 0, (ref * got).sum(axis=1) / denom, 1.0)
    top1 = top5 = None
    if logits:
        top1 = float(np.mean(ref.argmax(axis=1) == got.argmax(axis=1)))
        k = min(5, ref.shape[1])
        ref_top = np.argsort(-ref, axis=1)[:, :k]
        got_top = np.argsort(-got, axis=1)[:, :k]
        top5 = float(
            np.mean([len(set(a) & set(b)) / k for a, b in zip(ref_top, got_top, strict=True)])
        )
    return TapMetrics(
        max_abs=float(max_abs.max()),
        max_abs_norm=float(norm.max()),
        max_rel=float(rel.max()),
        mean_abs=float(diff.mean()),
        rmse=float(np.sqrt((diff**2).mean())),
        cosine=float(cosine.min()),
        sqnr_db=float(sqnr.min()),
        scale=float(scale[worst]),
        worst_image=worst,
        top1_agreement=top1,
        top5_overlap=top5,
    )


@dataclasses.dataclass(frozen=True)
class BudgetRule:
    """One table of the tolerance file: a ``model/variant/tap`` glob and its budgets."""

    pattern: str
    budgets: Mapping[str, float]
    notes: str = ""

    @property
    def parts(self) -> tuple[str, str, str]:
        model, variant, tap = self.pattern.split("/")
        return model, variant, tap

    def matches(self, model: str, variant: str, tap: str) -> bool:
        return all(
            fnmatch.fnmatchcase(value, glob)
            for value, glob in zip((model, variant, tap), self.parts, strict=True)
        )

    @property
    def specificity(self) -> int:
        """Tap beats variant beats model; a literal part beats a glob."""
        weights = (1, 2, 4)
        return sum(w for w, part in zip(weights, self.parts, strict=True) if "*" not in part)


@dataclasses.dataclass(frozen=True)
class Budget:
    """The budgets that apply to one tap, with the rule each came from."""

    limits: Mapping[str, float]
    sources: Mapping[str, str]


class TolerancePolicy:
    """Budgets by ``model/variant/tap`` key; the most specific key wins per metric."""

    def __init__(self, rules: Sequence[BudgetRule], source: str = "<memory>") -> None:
        self.rules = list(rules)
        self.source = source

    @classmethod
    def load(cls, path: Path) -> TolerancePolicy:
        """Read and validate a tolerance TOML file (``[budget."model/variant/tap"]`` tables)."""
        data = read_config(path, "tolerance file", ToleranceError)
        try:
            check(data, TOLERANCE_SCHEMA, path)
        except ConfigError as exc:
            raise ToleranceError(str(exc)) from None
        rules = []
        for pattern, rule in data.get("budget", {}).items():
            if pattern.count("/") != 2:
                raise ToleranceError(f"{path}: budget key {pattern!r} must be 'model/variant/tap'")
            budgets = {k: float(v) for k, v in rule.items() if k != "notes"}
            rules.append(BudgetRule(pattern, budgets, str(rule.get("notes", ""))))
        if not rules:
            raise ToleranceError(f'{path}: no [budget."model/variant/tap"] tables')
        return cls(rules, source=str(path))

    def budget(self, model: str, variant: str, tap: str) -> Budget:
        """Resolve every budget key for one tap."""
        limits: dict[str, float] = {}
        sources: dict[str, str] = {}
        ranked = sorted(
            (r for r in self.rules if r.matches(model, variant, tap)),
            key=lambda r: r.specificity,
        )
        for rule in ranked:  # later (more specific) rules overwrite earlier ones
            for key, value in rule.budgets.items():
                limits[key] = value
                sources[key] = rule.pattern
        if not limits:
            raise ToleranceError(
                f"{self.source}: no budget matches {model}/{variant}/{tap}; add a '*/*/*' default"
            )
        return Budget(limits, sources)


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
    reference: Mapping[str, np.ndarray],
    obtained: Mapping[str, np.ndarray],
    policy: TolerancePolicy,
) -> VariantVerdict:
    """Judge every tap of a variant against the reference."""
    verdicts = []
    for tap in taps:
        if tap.name not in obtained:
            raise KeyError(f"runtime {variant} returned no tensor for tap '{tap.name}'")
        ref, got = reference[tap.name], obtained[tap.name]
        if ref.shape != got.shape:
            raise ValueError(
                f"{variant}: tap '{tap.name}' has shape {got.shape}, reference {ref.shape}"
            )
        metrics = tap_metrics(ref, got, logits=tap.is_logits)
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
