"""The worker side of a :class:`~parity.session.Session`: plans the run, runs the
backends in worker processes (:mod:`parity.workers`) and hands their outcomes back as
frozen values (:class:`Fetched`, :class:`ReferenceRun`) the session takes; it writes no
session state.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from parity.artifacts import Artifact, ArtifactCache, BuildContext
from parity.backends import get_exporter
from parity.bundle import Bundle
from parity.context import ModelContext
from parity.plan import plan, plan_workers
from parity.result import VariantResult
from parity.runconfig import Progress, RunConfig
from parity.runfiles import REFERENCE_TASK, load_arrays
from parity.scratch import owned_folder, remove_owned
from parity.variants import VARIANTS, Variant
from parity.weights import HandedWeights, cached_weights_sha256
from parity.workers import Job, TaskOutcome
from parity.zoo import ModelCard


class ModelUnderTest(Protocol):
    """What the worker side reads of a model under test (a :class:`parity.session.Session`,
    which imports this module: typed here by what is used, not by the class)."""

    config: RunConfig
    card: ModelCard
    bundle: Bundle | None
    cache: ArtifactCache
    context: BuildContext
    progress: Progress

    @property
    def batch(self) -> np.ndarray: ...

    def known_reference(self) -> dict[str, np.ndarray] | None: ...

    def has_run(self, name: str) -> bool: ...


@dataclasses.dataclass(frozen=True)
class ReferenceRun:
    """What the torch worker gave back: the weights and the reference taps, or why not.

    ``source``: ``"cached"`` (the worker read the reference cache) or ``"computed"``.
    """

    failure: str | None
    handed: HandedWeights | None = None
    taps: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    source: str = ""


@dataclasses.dataclass(frozen=True)
class Fetched:
    """What one prefetch's workers gave back, for :meth:`Session.take`.

    Attributes:
        run_dir: their run directory (the taps are memory-mapped from it).
        outputs: variant -> (taps on the batch, its artifact).
        failures: variant -> (why its worker failed on it, its artifact).
        seconds: variant -> seconds its worker took (artifact, load and run).
        executed: variant -> the precision it ran in, where its runtime says.
        located: variant -> tap -> the tensor its runner read it from.
        external: the results of the file made elsewhere (``None``: none was asked for).
        reference: what the torch worker gave back (``None``: it did not run).
    """

    run_dir: Path
    outputs: Mapping[str, tuple[Mapping[str, np.ndarray], Artifact | None]]
    failures: Mapping[str, tuple[str, Artifact | None]]
    seconds: Mapping[str, float]
    executed: Mapping[str, str]
    located: Mapping[str, Mapping[str, str]]
    external: tuple[VariantResult, ...] | None = None
    reference: ReferenceRun | None = None


def fetch(
    session: ModelUnderTest,
    variants: Sequence[Variant],
    external: dict[str, Any] | None = None,
    reference: bool = False,
    state_dict: bool = False,
    on_outputs: Callable[[str, Mapping[str, np.ndarray]], None] | None = None,
) -> Fetched:
    """Run the reference, ``variants`` and a file made elsewhere in worker processes.

    Each backend runs in its own worker (:mod:`parity.workers`), up to
    ``config.jobs`` at a time; taps come back as memory-mapped ``.npy`` files. A
    worker that fails, crashes or times out on a variant makes that variant a failed
    result (see :meth:`Session.outputs`); bad input raises :class:`ParityError`.
    ``reference`` runs the torch worker even when the reference is cached (it hands over
    the weights; ``state_dict``: as a file too). ``on_outputs(variant, taps)`` is called
    with each variant's taps as its worker writes them, while the other workers run.
    """
    applicable = plan(session.card, variants, exporting=session.bundle is None).applicable
    names = [v.name for v in applicable if not session.has_run(v.name)]
    run_dir = owned_folder("parity-run-")

    def arrived(name: str, outcome: TaskOutcome) -> None:
        if on_outputs is not None and name in names and outcome.error is None:
            # an early look only: what fails to load here fails again, and is handled,
            # when the outputs are taken after the workers
            with contextlib.suppress(Exception):
                on_outputs(name, load_arrays(outcome.folder))

    try:
        outcomes, handed = run_workers(
            session, run_dir, names, external, reference, state_dict=state_dict, on_outcome=arrived
        )
    except BaseException:
        remove_owned(run_dir)
        raise
    done = {n: outcomes[n] for n in names}
    results: tuple[VariantResult, ...] | None = None
    if external is not None:
        outcome = outcomes["external"]
        if outcome.error is None:
            results = tuple(pickle.loads((outcome.folder / "result.pkl").read_bytes()))
        else:
            from parity.readers import external_variant

            variant = external_variant(Path(external["path"]), external["runtime"])
            modes = ("live", "golden") if external.get("golden") else ("live",)
            results = tuple(VariantResult.failed_to_run(variant, outcome.error, m) for m in modes)
    return Fetched(
        run_dir=run_dir,
        outputs={
            n: (load_arrays(o.folder), o.artifact) for n, o in done.items() if o.error is None
        },
        failures={n: (o.error, o.artifact) for n, o in done.items() if o.error is not None},
        seconds={n: float(o.record.get("seconds", 0.0)) for n, o in done.items()},
        executed={
            n: str(o.record["executed"]) for n, o in done.items() if o.record.get("executed")
        },
        located={n: dict(o.record.get("located") or {}) for n, o in done.items()},
        external=results,
        reference=handed,
    )


def run_workers(
    session: ModelUnderTest,
    run_dir: Path,
    names: Sequence[str],
    external: dict[str, Any] | None = None,
    reference: bool = False,
    adjust: Callable[[list[Job]], None] = lambda jobs: None,
    run: bool = True,
    state_dict: bool = False,
    on_outcome: Callable[[str, TaskOutcome], None] | None = None,
) -> tuple[dict[str, TaskOutcome], ReferenceRun | None]:
    """Plan and run the workers for the variants ``names`` in ``run_dir``; the outcomes,
    and what the torch worker gave back when it ran (:meth:`Session.take_reference`).

    The reference is read from the cache or run in the torch worker (always with
    ``reference``, which also hands over the weights; ``state_dict``: as a file too);
    ``adjust`` edits the planned jobs before they start (``parity eval`` turns runs into
    evaluations); ``run=False`` only exports the variants' artifacts (``parity bundle``).
    """
    from parity.workers import Runs, default_jobs, threads_per_worker

    jobs = session.config.jobs or default_jobs()
    known = cached_weights_sha256(session.card, session.config.weights)
    threads = threads_per_worker(jobs, session.config.threads)
    config = dataclasses.replace(session.config, threads=threads)
    context = ModelContext.write(run_dir, config, session.batch, known)
    in_cache = frozenset(
        e for e in {VARIANTS[n].exporter or "" for n in names} - {""}
        if known is not None and session.cache.is_cached(get_exporter(e), session.context)
    )  # fmt: skip
    planned = plan_workers(
        names, exporting=session.bundle is None, cached=in_cache, slots=jobs, external=external,
        reference=reference, held_reference=session.known_reference() is not None, run=run,
        state_dict=state_dict,
    )  # fmt: skip
    work = list(planned.jobs)
    adjust(work)
    runs = Runs(run_dir, context.to_dict(), jobs, config.timeout, session.progress, on_outcome)
    outcomes = runs.run(work)
    if not planned.reference:
        return outcomes, None
    failure = outcomes[REFERENCE_TASK].error
    if failure is not None:
        return outcomes, ReferenceRun(failure)
    handed = context.handed()
    if handed is None:
        raise RuntimeError("the torch worker handed no weights (a bug in parity)")
    done = outcomes[REFERENCE_TASK].record
    return outcomes, ReferenceRun(
        None,
        handed,
        load_arrays(run_dir / REFERENCE_TASK),
        float(done.get("seconds", 0.0)),
        str(done.get("source") or "computed"),
    )
