"""Score ``parity doctor`` on the held-out pipelines (tests/doctor_heldout.py).

    PYTHONPATH=<tree> .venv/bin/python bench/doctor_heldout.py [--no-tf] [--only NAME...]
        [--before ROWS.txt --write] [--calibration]

Runs the doctor of the tree on ``PYTHONPATH`` (so the same script scores an older
commit checked out elsewhere) the way the CLI runs each check: ``preprocessing`` with the
card's torch model, ``precision`` with the user's model object, ``calibration`` on the
user's representative generator (its statistics, the part of the check that reads the
user's data). A fault counts when the finding is a problem and names every expected
factor (substrings) and, for preprocessing, no other factor; a clean case when it is not
a problem. Prints one markdown row per case and the score; ``--write`` puts the table,
with the rows the same script printed on the doctor before (``--before``), in the
"Held-out pipelines" section of bench/doctor_corpus.md, and the run time per check in its
"Run time per check" section (``--calibration`` adds the full int8 calibration check on
the held-out generators: LiteRT conversions, slow).
"""

from __future__ import annotations

import argparse
import os
import statistics
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
from doctor_md import write_section  # noqa: E402

from parity.doctor import PROBLEM, Finding, diagnose_calibration_stats  # noqa: E402
from parity.doctor.inputs import representative_batch  # noqa: E402
from parity.doctor.registry import CHECKS, DoctorInputs  # noqa: E402
from parity.harness import RunConfig  # noqa: E402
from parity.local import LocalSession  # noqa: E402


def diagnose(session: LocalSession, case: HeldOut) -> Finding:
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


def _rows(path: Path) -> dict[str, tuple[str, str]]:
    """Case name -> (verdict cell, seconds) from a file of printed rows."""
    rows = {}
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 6:
            rows[cells[0]] = (cells[4], cells[5])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-tf", action="store_true", help="skip the TF pipelines")
    parser.add_argument("--only", nargs="*", help="case names to run")
    parser.add_argument("--before", type=Path, help="rows printed by the doctor before")
    parser.add_argument("--write", action="store_true", help="write bench/doctor_corpus.md")
    parser.add_argument("--calibration", action="store_true", help="time the int8 check")
    args = parser.parse_args()
    session = LocalSession(RunConfig(model="mobilenet_v2"))
    cases = [c for c in heldout_cases(not args.no_tf) if not args.only or c.name in args.only]
    score = {"fault": 0, "clean": 0}
    seconds_by_kind: dict[str, list[float]] = {"preprocessing": [], "model": [], "calibration": []}
    rows = []
    before = _rows(args.before) if args.before else {}
    for case in cases:
        start = time.perf_counter()
        try:
            finding: Any = diagnose(session, case)
            right, said = verdict(case, finding)
        except Exception as exc:  # a crash is scored, not raised
            right, said = False, f"{type(exc).__name__}: {str(exc)[:90]}"
        seconds = time.perf_counter() - start
        seconds_by_kind[case.kind].append(seconds)
        kind = "fault" if case.expected else "clean"
        score[kind] += right
        expected = " + ".join(case.expected) or "clean"
        print(
            f"| {case.name} | {case.style} | {case.kind} | {expected} | "
            f"{'yes' if right else 'no'}: {said} | {seconds:.1f} |",
            flush=True,
        )
        then = before.get(case.name, ("not run", ""))[0]
        rows.append(
            f"| {case.name} | {case.style} | {case.kind} | {expected} | {then} | "
            f"{'yes' if right else 'no'}: {said} | {seconds:.1f} |"
        )
    faults = sum(1 for c in cases if c.expected)
    clean = len(cases) - faults
    summary = (
        f"faults named exactly {score['fault']}/{faults}; clean left clean "
        f"{score['clean']}/{clean} (false alarms {clean - score['clean']})"
    )
    print(summary)
    if args.calibration:
        seconds_by_kind["calibration (int8, LiteRT)"] = time_calibration(session, cases)
    if args.write:
        right_then = {c.name for c in cases if before.get(c.name, ("",))[0].startswith("yes")}
        then_faults = sum(1 for c in cases if c.expected and c.name in right_then)
        then_clean = sum(1 for c in cases if not c.expected and c.name in right_then)
        write_section(
            "Held-out pipelines (tests/doctor_heldout.py)",
            [
                f"Measured by `bench/doctor_heldout.py` on mobilenet_v2's card (calibrated, "
                f"untrained weights), {time.strftime('%Y-%m-%d')}, 2 shared CPU cores under "
                "load (seconds are wall time, a whole check as the CLI runs it).",
                "",
                f"**now: {summary}; before (main at 0260c97, the same script): faults "
                f"{then_faults}/{faults}, clean {then_clean}/{clean}**.",
                "",
                "| case | style | check | expected | before | now | s (now) |",
                "|---|---|---|---|---|---|---|",
                *rows,
            ],
        )
        write_section(
            "Run time per check",
            [
                "Median wall time of one check on the held-out cases, as the CLI runs it (2 "
                f"shared cores, 1-min load average {os.getloadavg()[0]:.0f} at the end: other "
                "sessions' suites ran alongside; 'calibration' here is the statistics of the "
                "user's generator, the int8 conversion is `--calibration`):",
                "",
                "| check | cases | median s | max s |",
                "|---|---|---|---|",
                *(
                    f"| {kind} | {len(times)} | {statistics.median(times):.1f} | {max(times):.1f} |"
                    for kind, times in seconds_by_kind.items()
                    if times
                ),
            ],
        )


def time_calibration(session: LocalSession, cases: list[HeldOut]) -> list[float]:
    """The full int8 calibration check on each held-out generator, timed."""
    from parity.doctor import diagnose_calibration

    times = []
    for case in cases:
        if case.kind == "calibration":
            start = time.perf_counter()
            finding = diagnose_calibration(session, representative_batch(case.obj))
            times.append(time.perf_counter() - start)
            print(f"calibration {case.name}: {finding.status} in {times[-1]:.1f} s", flush=True)
    return times


if __name__ == "__main__":
    main()
