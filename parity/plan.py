"""The plan stage: which variants apply to a model here (the others ``n/a``, with the
reason) and the worker jobs that make and run them, decided before any worker starts.

:func:`plan` (card, variants, machine -> :class:`Plan`) is what every command asks first:
``parity run``/``check`` (:mod:`parity.prefetch`), ``bundle``, ``eval``, ``budgets``, the
pytest plugin. :func:`plan_workers` turns the applicable variants of a run directory into
jobs (:class:`WorkerPlan`), over :func:`parity.workers.plan` (the job graph) and
:func:`parity.workers.spread` (idle worker slots).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from parity.applicability import not_applicable_reason
from parity.backends import get_exporter
from parity.lazy import installed
from parity.variants import REFERENCE, VARIANTS, Variant
from parity.workers import Job, spread
from parity.workers import plan as job_graph
from parity.zoo import ModelCard


@dataclasses.dataclass(frozen=True)
class Plan:
    """Which of the variants asked for apply to a model here.

    Attributes:
        card: the model's card.
        variants: the variants asked for, in report order.
        reasons: variant name -> why it does not apply here (its ``n/a`` row).
        exporting: artifacts are exported here (``False``: read from a bundle).
    """

    card: ModelCard
    variants: tuple[Variant, ...]
    reasons: Mapping[str, str]
    exporting: bool = True

    @property
    def applicable(self) -> tuple[Variant, ...]:
        """The variants that run in workers: every one that applies, but the reference."""
        return tuple(v for v in self.variants if not v.reference and v.name not in self.reasons)

    @property
    def not_applicable(self) -> tuple[tuple[Variant, str], ...]:
        """The variants that do not apply, each with the reason."""
        return tuple((v, self.reasons[v.name]) for v in self.variants if v.name in self.reasons)


def plan(card: ModelCard, variants: Iterable[Variant], exporting: bool = True) -> Plan:
    """Which of ``variants`` apply to ``card`` here (:mod:`parity.applicability`)."""
    chosen = tuple(variants)
    reasons = {
        v.name: reason
        for v in chosen
        if (reason := not_applicable_reason(v, card, exporting)) is not None
    }
    return Plan(card, chosen, reasons, exporting)


@dataclasses.dataclass(frozen=True)
class WorkerPlan:
    """The worker jobs of one run directory, in start order; ``reference``: the torch
    worker runs the reference (and hands the weights over)."""

    jobs: tuple[Job, ...]
    reference: bool


def plan_workers(
    names: Sequence[str],
    *,
    exporting: bool,
    cached: frozenset[str],
    slots: int,
    external: dict[str, Any] | None = None,
    reference: bool = False,
    held_reference: bool = False,
    run: bool = True,
    state_dict: bool = False,
) -> WorkerPlan:
    """The jobs for the applicable variants ``names`` (and a file made elsewhere).

    The torch worker runs the reference when torch is here and the reference is not held
    (``held_reference``: read from the reference cache) or ``reference`` asks for it (it
    hands over the weights; ``state_dict``: as a file too), or when an export needs the
    weights as a file (the Keras twin's). ``cached``: exporters whose artifact is in the
    cache already; ``slots``: workers that may run side by side; ``run=False``: the exports
    only (``parity bundle``).
    """
    torch_here = installed(VARIANTS[REFERENCE].module)
    with_reference = torch_here and (reference or not held_reference)
    work = job_graph(names, VARIANTS, external, exporting, with_reference, cached, run)
    if not with_reference and torch_here and _hands_state_dict(work):
        # The Keras export needs the weights as a file, which the reference task writes
        # (it reads the reference from the cache): e.g. a later prefetch of the plugin.
        with_reference = True
        work = job_graph(names, VARIANTS, external, exporting, with_reference, cached, run)
    if state_dict and with_reference:  # the reference's job comes first
        work[0].state_dict = True
    return WorkerPlan(tuple(spread(work, slots)), with_reference)


def _hands_state_dict(work: Sequence[Job]) -> bool:
    """Whether a plan's jobs export an artifact that needs the weights handed as a file."""
    return any(
        "state_dict" in get_exporter(task["exporter"]).handoff
        for job in work
        for task in job.tasks
        if task["kind"] == "export"
    )
