"""``parity doctor`` in a worker process: the checks run torch, TensorFlow and the runtimes,
so they run in one worker (:mod:`parity.worker`, a ``doctor`` task: the user's inputs by
:func:`parity.doctor.registry.doctor_inputs`) and the parent, which imports no framework
(nor the checks), reads the findings back.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from parity.doctor.findings import Finding
from parity.errors import RuntimeFailure
from parity.scratch import owned_folder, remove_owned

if TYPE_CHECKING:
    from parity.session import Session

#: The task's name in the run directory.
DOCTOR_TASK = "doctor"


def doctor_in_worker(
    session: Session, checks: Sequence[str] | None, options: dict[str, Any]
) -> list[Finding]:
    """Run the doctor's ``checks`` in a worker on ``session``'s model; its findings.

    Bad input (an unknown check, a module that does not import) raises the worker's
    :class:`~parity.errors.ParityError` here; a crash raises :class:`RuntimeFailure`.
    """
    from parity.context import ModelContext
    from parity.variants import REFERENCE, VARIANTS
    from parity.workers import Job, Runs

    run_dir = owned_folder("parity-doctor-")
    try:
        context = ModelContext.write(run_dir, session.config, session.batch)
        task = {"kind": DOCTOR_TASK, "name": DOCTOR_TASK, "checks": checks, "options": options}
        job = Job(VARIANTS[REFERENCE].family, [task])
        runs = Runs(run_dir, context.to_dict(), 1, session.config.timeout, session.progress)
        outcome = runs.run([job])[DOCTOR_TASK]
        if outcome.error is not None:
            raise RuntimeFailure(f"the doctor could not finish: {outcome.error}")
        findings: list[Finding] = pickle.loads((outcome.folder / "findings.pkl").read_bytes())
        return findings
    finally:
        remove_owned(run_dir)
