"""Score ``parity doctor`` on the held-out pipelines (tests/doctor_heldout.py).

    PYTHONPATH=<tree> .venv/bin/python bench/doctor_heldout.py [--no-tf] [--only NAME...]

Runs the doctor of the tree on ``PYTHONPATH`` (so the same script scores an older
commit checked out elsewhere) the way the CLI runs each check: ``preprocessing`` with the
card's torch model, ``precision`` with the user's model object, ``calibration`` on the
user's representative generator (its statistics, the part of the check that reads the
user's data). A fault counts when the finding is a problem and names every expected
factor (substrings) and, for preprocessing, no other factor; a clean case when it is not
a problem. Prints one markdown row per case and the score.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests")]

import torch  # noqa: E402, F401  (before TensorFlow: the import-order trap)
import torchvision  # noqa: E402, F401
from doctor_corpus import named_exactly  # noqa: E402
from doctor_heldout import HeldOut, heldout_cases  # noqa: E402

from parity.doctor import PROBLEM, Finding, diagnose_calibration_stats  # noqa: E402
from parity.doctor.inputs import representative_batch  # noqa: E402
from parity.doctor.registry import CHECKS, DoctorInputs  # noqa: E402
from parity.harness import RunConfig, Session  # noqa: E402


def diagnose(session: Session, case: HeldOut) -> Finding:
    """The finding the CLI would give for this case's object."""
    if case.kind == "preprocessing":
        inputs = DoctorInputs(preprocess=case.obj, images=case.images)
        return CHECKS["preprocessing"].run(session, inputs)
    if case.kind == "model":
        model = case.obj()
        finding = CHECKS["precision"].run(session, DoctorInputs(model=model, count=4))
        return finding
    batch = representative_batch(case.obj)
    return diagnose_calibration_stats(batch, session.batch, session.card.preprocess)


def verdict(case: HeldOut, finding: Finding) -> tuple[bool, str]:
    """Whether the finding is right for the case, and what it said (short)."""
    factors: list[str] = list(finding.evidence.get("factors", []))
    said = " + ".join(factors) if factors else finding.cause[:90]
    if not case.expected:
        return finding.status != PROBLEM, f"{finding.status}: {said}"
    if finding.status != PROBLEM:
        return False, f"{finding.status}: {said}"
    if case.kind == "preprocessing":
        return named_exactly(factors, case.expected), said
    return all(e in finding.cause for e in case.expected), said


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-tf", action="store_true", help="skip the TF pipelines")
    parser.add_argument("--only", nargs="*", help="case names to run")
    args = parser.parse_args()
    session = Session(RunConfig(model="mobilenet_v2"))
    cases = [c for c in heldout_cases(not args.no_tf) if not args.only or c.name in args.only]
    score = {"fault": 0, "clean": 0}
    for case in cases:
        start = time.perf_counter()
        try:
            finding: Any = diagnose(session, case)
            right, said = verdict(case, finding)
        except Exception as exc:  # a crash is scored, not raised
            right, said = False, f"{type(exc).__name__}: {str(exc)[:90]}"
        seconds = time.perf_counter() - start
        kind = "fault" if case.expected else "clean"
        score[kind] += right
        expected = " + ".join(case.expected) or "clean"
        print(
            f"| {case.name} | {case.style} | {case.kind} | {expected} | "
            f"{'yes' if right else 'no'}: {said} | {seconds:.1f} |",
            flush=True,
        )
    faults = sum(1 for c in cases if c.expected)
    clean = len(cases) - faults
    print(
        f"faults named exactly {score['fault']}/{faults}; clean left clean "
        f"{score['clean']}/{clean} (false alarms {clean - score['clean']})"
    )


if __name__ == "__main__":
    main()
