"""The worker side of a :class:`~parity.session.Session`: plans the run, runs the
backends in worker processes (:mod:`parity.workers`) and takes their outcomes back.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
import tempfile
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from parity.backends import get_exporter
from parity.lazy import installed
from parity.result import VariantResult
from parity.runfiles import REFERENCE_TASK, load_arrays
from parity.variants import REFERENCE, VARIANTS, Variant
from parity.weights import HandedWeights, cached_weights_sha256
from parity.workers import Job, TaskOutcome

if TYPE_CHECKING:
    from parity.session import Session


def prefetch(
    session: Session,
    variants: Sequence[Variant],
    external: dict[str, Any] | None = None,
    reference: bool = False,
    state_dict: bool = False,
) -> None:
    """Run the reference, ``variants`` and a file made elsewhere in worker processes.

    Each backend runs in its own worker (:mod:`parity.workers`), up to
    ``config.jobs`` at a time; taps come back as memory-mapped ``.npy`` files. A
    worker that fails, crashes or times out on a variant makes that variant a failed
    result (see :meth:`Session.outputs`); bad input raises :class:`ParityError`.
    ``reference`` runs the torch worker even when the reference is cached (it hands over
    the weights; ``state_dict``: as a file too).
    """
    names = [v.name for v in session.applicable(variants) if v.name not in session._outputs]
    run_dir = Path(tempfile.mkdtemp(prefix="parity-run-"))
    session._release = weakref.finalize(session, shutil.rmtree, run_dir, True)
    outcomes = session.run_workers(run_dir, names, external, reference, state_dict=state_dict)
    for name in names:
        outcome = outcomes[name]
        session._worker_seconds[name] = float(outcome.record.get("seconds", 0.0))
        if outcome.record.get("executed"):
            session.executed[name] = str(outcome.record["executed"])
        session.located[name] = dict(outcome.record.get("located") or {})
        artifact = outcome.artifact
        if outcome.error is not None:
            session._failures[name] = (outcome.error, artifact)
        else:
            session._outputs[name] = (load_arrays(outcome.folder), artifact)
    if external is not None:
        outcome = outcomes["external"]
        if outcome.error is None:
            session.external = pickle.loads((outcome.folder / "result.pkl").read_bytes())
        else:
            from parity.readers import external_variant

            variant = external_variant(Path(external["path"]), external["runtime"])
            modes = ("live", "golden") if external.get("golden") else ("live",)
            session.external = [
                VariantResult.failed_to_run(variant, outcome.error, m) for m in modes
            ]


def run_workers(
    session: Session,
    run_dir: Path,
    names: Sequence[str],
    external: dict[str, Any] | None = None,
    reference: bool = False,
    adjust: Callable[[list[Job]], None] = lambda jobs: None,
    run: bool = True,
    state_dict: bool = False,
) -> dict[str, TaskOutcome]:
    """Plan and run the workers for the variants ``names`` in ``run_dir``; the outcomes.

    The reference is read from the cache or run in the torch worker (always with
    ``reference``, which also hands over the weights; ``state_dict``: as a file too);
    ``adjust`` edits the planned jobs before they start (``parity eval`` turns runs into
    evaluations); ``run=False`` only exports the variants' artifacts (``parity bundle``).
    """
    from parity.workers import Runs, default_jobs, plan, spread, threads_per_worker

    exporting = session.bundle is None
    jobs = session.config.jobs or default_jobs()
    np.save(run_dir / "batch.npy", session.batch)
    config = dataclasses.asdict(session.config)
    config["threads"] = threads_per_worker(jobs, session.config.threads)
    known = cached_weights_sha256(session.card, session.config.weights)
    if "reference" not in session.__dict__ and known is not None:  # no torch worker needed
        cached = session._cached_reference(session._reference_key(known))
        if cached is not None:
            session.__dict__["reference"] = cached
    torch_here = installed(VARIANTS[REFERENCE].module)
    with_reference = torch_here and (reference or "reference" not in session.__dict__)
    in_cache = frozenset(
        e for e in {VARIANTS[n].exporter or "" for n in names} - {""}
        if known is not None and session.cache.is_cached(get_exporter(e), session.context)
    )  # fmt: skip
    work = plan(names, VARIANTS, external, exporting, with_reference, in_cache, run)
    if not with_reference and torch_here and _hands_state_dict(work):
        # The Keras export needs the weights as a file, which the reference task writes
        # (it reads the reference from the cache): e.g. a later prefetch of the plugin.
        with_reference = True
        work = plan(names, VARIANTS, external, exporting, with_reference, in_cache, run)
    if state_dict and with_reference:  # the reference's job comes first
        work[0].state_dict = True
    work = spread(work, jobs)
    adjust(work)
    outcomes = Runs(run_dir, config, jobs, session.config.timeout, session.progress).run(work)
    if with_reference:
        session.reference_failure = outcomes[REFERENCE_TASK].error
    if with_reference and session.reference_failure is None:
        handed = json.loads((run_dir / "weights.json").read_text())
        session.handed = HandedWeights(
            handed["source"], handed["sha256"], run_dir / "state_dict.npz"
        )
        session.__dict__["reference"] = load_arrays(run_dir / "reference")
        done = outcomes["reference"].record
        session.reference_seconds = float(done.get("seconds", 0.0))
        session.reference_source = str(done.get("source") or "computed")
        if session.reference_source == "computed":
            key = session._reference_key(handed["sha256"])
            session.references.store(session.card.name, key, session.__dict__["reference"])
    return outcomes


def _hands_state_dict(work: Sequence[Any]) -> bool:
    """Whether a plan's jobs export an artifact that needs the weights handed as a file."""
    return any(
        "state_dict" in get_exporter(task["exporter"]).handoff
        for job in work
        for task in job.tasks
        if task["kind"] == "export"
    )
