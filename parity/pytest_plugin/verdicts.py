"""Per-image judging (rate budgets left to the whole-set test) and the per-tap text table."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from parity.pytest_plugin.options import RATE_KEYS

if TYPE_CHECKING:
    from parity.compare import VariantVerdict
    from parity.harness import Session
    from parity.variants import Variant


def _fmt(value: float | None, spec: str) -> str:
    if value is None:
        return "-"
    if math.isinf(value) or math.isnan(value):
        return str(value)
    return format(value, spec)


def tap_table_lines(verdict: VariantVerdict) -> list[str]:
    """The per-tap table as plain text: metric / budget, SQNR, status, ``<- first``."""
    first = verdict.first_failure
    header = ("tap", "max_abs_norm / budget", "1-cosine / budget", "SQNR dB / min", "status")
    rows = [header]
    for tap in verdict.taps:
        m, limits = tap.metrics, tap.budget.limits

        def pair(value: str, limit: float | None, spec: str) -> str:
            return value if limit is None else f"{value} / {format(limit, spec)}"

        cos_limit = limits.get("min_cosine")
        status = "ok" if tap.passed else "FAIL"
        if tap is first:
            status += " <- first"
        if not tap.passed:
            status += f": {'; '.join(tap.failures)}"
        rows.append(
            (
                tap.tap.name,
                pair(_fmt(m.max_abs_norm, ".2e"), limits.get("max_abs_norm"), ".0e"),
                pair(
                    _fmt(max(0.0, 1.0 - m.cosine), ".1e"),
                    None if cos_limit is None else 1.0 - cos_limit,
                    ".0e",
                ),
                pair(_fmt(m.sqnr_db, ".1f"), limits.get("min_sqnr_db"), ".1f"),
                status,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return [
        "  ".join(
            [row[0].ljust(widths[0]), *(row[i].rjust(widths[i]) for i in (1, 2, 3)), row[4]]
        ).rstrip()
        for row in rows
    ]


def rejudged(verdict: VariantVerdict, *, rates: bool) -> VariantVerdict:
    """``verdict`` judged on the per-image budgets only (``rates=False``) or rates only.

    A rate budget below 1 (``min_top1_agreement = 0.1875``: 3 of 16 images) says nothing
    about one image, so per-image tests leave it to the whole-set test. A rate of 1 means
    every image, and per-image tests judge it exactly. The two together are the CLI gate.
    """
    from parity.compare import TapVerdict, VariantVerdict, judge
    from parity.tolerances import Budget

    taps = []
    for tap in verdict.taps:
        limits = {
            key: limit
            for key, limit in tap.budget.limits.items()
            if (key in RATE_KEYS and limit < 1.0) == rates
        }
        sources = {key: tap.budget.sources[key] for key in limits}
        budget = Budget(limits, sources)
        taps.append(TapVerdict(tap.tap, tap.metrics, budget, judge(tap.metrics, budget)))
    return VariantVerdict(verdict.variant, tuple(taps))


def image_verdict(session: Session, variant: Variant, index: int, mode: str) -> VariantVerdict:
    """One image's verdict on the per-image budgets (see :func:`rejudged`)."""
    from parity.judge import image_verdict as judged_image

    return rejudged(judged_image(session, variant, index, mode), rates=False)


def has_rate_budgets(session: Session, variant: Variant) -> bool:
    """Whether a variant has a budget that only the whole-set test can judge."""
    return any(
        key in RATE_KEYS and limit < 1.0
        for tap in session.taps
        for key, limit in session.policy.budget(
            session.card.name, variant.name, tap.name
        ).limits.items()
    )
