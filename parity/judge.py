"""The judge stage: each variant's outputs against the torch reference now (live) and the
stored goldens, in one order, as immutable results.

The CLI's :func:`parity.harness.run_parity` and the pytest plugin's ``--parity-report``
both judge through :func:`judge`; one variant's check is :func:`live` or :func:`golden`
(its taps against the budgets, over :mod:`parity.compare` and :mod:`parity.golden`), one
image's :func:`image_verdict` (the plugin's per-image tests).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from parity.compare import ReferenceTap, VariantVerdict, compare_taps, merge_verdicts
from parity.errors import ParityError, RuntimeFailure
from parity.golden import GoldenStore, golden_verdict
from parity.plan import plan
from parity.result import VariantResult
from parity.variants import Variant

if TYPE_CHECKING:
    from parity.bundle import Bundle
    from parity.exported import Artifact
    from parity.fixtures import Fixture
    from parity.taps import Tap
    from parity.tolerances import TolerancePolicy
    from parity.zoo import ModelCard


class Judged(Protocol):
    """What the stage reads of a model under test (a :class:`parity.session.Session`, which
    calls this module: typed by what is used, not by the class)."""

    card: ModelCard
    taps: tuple[Tap, ...]
    policy: TolerancePolicy
    bundle: Bundle | None
    executed: dict[str, str]
    located: dict[str, dict[str, str]]
    worker_seconds: dict[str, float]

    @property
    def fixtures(self) -> list[Fixture]: ...

    @property
    def prepared_reference(self) -> dict[str, ReferenceTap]: ...

    @property
    def goldens(self) -> GoldenStore: ...

    def outputs(self, variant: Variant) -> tuple[dict[str, np.ndarray], Artifact | None]: ...

    def forget(self, variant: Variant) -> None: ...


@dataclasses.dataclass(frozen=True)
class Judging:
    """What to judge.

    Attributes:
        variants: in report order (the torch reference is judged against the goldens only).
        live: each variant but the reference vs torch now.
        golden: each variant vs the stored goldens.
        failures: variant name -> why it could not run, known before judging (its rows
            fail with that message).
        golden_errors: a :class:`~parity.errors.ParityError` of a golden check (stale or
            missing goldens) is raised (the CLI: bad input, exit 2) or becomes the variant's
            failed row (the plugin, whose report keeps the other variants).
        verdicts: variant -> its live verdict, already computed on the same outputs
            (:class:`EarlyVerdicts`, while the other workers ran).
    """

    variants: tuple[Variant, ...]
    live: bool
    golden: bool
    failures: Mapping[str, str] = dataclasses.field(default_factory=dict)
    golden_errors: Literal["raise", "row"] = "raise"
    verdicts: Mapping[str, VariantVerdict] = dataclasses.field(default_factory=dict)


def judge(session: Judged, judging: Judging) -> tuple[VariantResult, ...]:
    """One result per variant and mode (live before golden), each variant's outputs dropped
    once judged."""
    results: list[VariantResult] = []
    for variant in judging.variants:
        modes = [m for m, wanted in (("live", judging.live and not variant.reference),
                                     ("golden", judging.golden)) if wanted]  # fmt: skip
        error = judging.failures.get(variant.name)
        for mode in modes:
            if error is not None:
                results.append(VariantResult.failed_to_run(variant, error, mode))
            elif mode == "live":
                results.append(live(session, variant, judging.verdicts.get(variant.name)))
            else:
                try:
                    results.append(golden(session, variant))
                except ParityError as exc:
                    if judging.golden_errors == "raise":
                        raise
                    results.append(VariantResult.failed_to_run(variant, str(exc), mode))
        session.forget(variant)  # judged: a report needs the verdicts, not the taps
    return tuple(results)


def live(session: Judged, variant: Variant, known: VariantVerdict | None = None) -> VariantResult:
    """Live check: one variant vs the torch reference now, every tap, every image (``known``:
    its verdict, computed already on the same outputs)."""

    def verdict(obtained: Mapping[str, np.ndarray]) -> VariantVerdict:
        if known is not None:
            return known
        return _live_verdict(session, variant.name, obtained)

    return _judged(session, variant, verdict, "live")


def _live_verdict(session: Judged, name: str, obtained: Mapping[str, np.ndarray]) -> VariantVerdict:
    return compare_taps(
        session.card.name, name, session.taps, session.prepared_reference, obtained,
        session.policy,
    )  # fmt: skip


class EarlyVerdicts:
    """Live verdicts computed in a thread of the parent as each variant's outputs arrive,
    while the other workers still run (numpy releases the GIL), for :attr:`Judging.verdicts`.

    Only for a session whose reference is known before its workers start (a warm run): the
    thread must not be the one that makes the reference. A verdict that raised is left out,
    and :func:`judge` computes it again where the error is handled.
    """

    def __init__(self, session: Judged) -> None:
        self.session = session
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="parity-judge")
        self.futures: dict[str, concurrent.futures.Future[VariantVerdict]] = {}

    def submit(self, name: str, obtained: Mapping[str, np.ndarray]) -> None:
        """Judge variant ``name`` on ``obtained`` (its taps) in the background."""
        self.futures[name] = self.pool.submit(_live_verdict, self.session, name, obtained)

    def verdicts(self) -> dict[str, VariantVerdict]:
        """Every verdict submitted, once computed (those that raised left out)."""
        concurrent.futures.wait(self.futures.values())
        return {n: f.result() for n, f in self.futures.items() if f.exception() is None}

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def golden(session: Judged, variant: Variant) -> VariantResult:
    """Regression check: one variant (torch included) vs the stored goldens; an image that
    fails keeps its obtained taps beside the goldens."""
    store, fixtures = session.goldens, session.fixtures

    def verdict(obtained: Mapping[str, np.ndarray]) -> VariantVerdict:
        verdicts = [image_verdict(session, variant, i) for i in range(len(fixtures))]
        for index, each in enumerate(verdicts):
            if not each.passed:
                store.write_obtained(fixtures[index].name, variant.name, obtained, index)
        return merge_verdicts(verdicts, session.policy, session.card.name)

    return _judged(session, variant, verdict, "golden")


def image_verdict(
    session: Judged, variant: Variant, index: int, mode: str = "golden"
) -> VariantVerdict:
    """One image's verdict: vs the golden (``mode="golden"``) or vs torch now."""
    obtained, _ = session.outputs(variant)
    card, taps, policy = session.card.name, session.taps, session.policy
    if mode == "live":
        rows = slice(index, index + 1)
        reference = {k: v.rows(rows) for k, v in session.prepared_reference.items()}
        single = {k: v[index : index + 1] for k, v in obtained.items()}
        return compare_taps(card, variant.name, taps, reference, single, policy)
    fixture = session.fixtures[index].name
    single = {k: v[index] for k, v in obtained.items()}
    return golden_verdict(card, variant.name, taps, session.goldens, fixture, single, policy)


def _judged(
    session: Judged,
    variant: Variant,
    verdict: Callable[[Mapping[str, np.ndarray]], VariantVerdict],
    mode: str,
) -> VariantResult:
    """The variant's result in ``mode``: ``n/a`` (:func:`parity.plan.plan`), failed to run
    (its runtime, or the torch reference, failed), or its outputs' ``verdict``; its
    seconds include its worker's."""
    exporting = session.bundle is None
    reason = plan(session.card, [variant], exporting).reasons.get(variant.name)
    if reason is not None:
        return VariantResult.not_applicable(variant, reason, mode)
    start = time.perf_counter() - session.worker_seconds.get(variant.name, 0.0)
    try:
        obtained, artifact = session.outputs(variant)
        if mode == "live":
            _ = session.prepared_reference  # the torch reference not there: a failed check
    except RuntimeFailure as exc:  # a runtime failing on its artifact is a failed check
        seconds = time.perf_counter() - start
        return VariantResult.failed_to_run(variant, str(exc), mode, exc.artifact, seconds)
    return VariantResult(
        variant, verdict(obtained), artifact, time.perf_counter() - start, mode=mode,
        executed=session.executed.get(variant.name),
        located=session.located.get(variant.name, {}),
    )  # fmt: skip
