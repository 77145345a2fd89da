"""``delegates``: XNNPACK on vs off, ONNX Runtime optimisations all vs disabled."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from parity.compare import tap_metrics
from parity.doctor.findings import OK, PROBLEM, Finding

#: Two fp32 executions of one artifact, per-tap max_abs_norm (fixtures/tolerances.toml).
DELEGATE_BUDGET = 5e-4
#: (variant, variant) pairs differing only in delegate / graph optimisation.
DELEGATE_PAIRS = (("litert_fp32", "litert_fp32_noxnn"), ("ort_dynamo", "ort_dynamo_noopt"))


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
