"""Score ``parity doctor``'s preprocessing check on the user-pipeline corpus, now and before.

    .venv/bin/python bench/doctor_corpus.py [--before COMMIT] [--no-tf] [--judge]

The corpus is tests/doctor_corpus.py (faults with the factors they must be named by, and
clean controls). "Named exactly" means every expected factor named by exactly one of the
finding's factor labels and no other label; a control must come back ``ok``. The doctor
"before" is ``parity/doctor.py`` at ``--before`` (the commit this work started from): it
reads its single best candidate (``best_candidate``, split on ``+``), and is given every
pipeline already wrapped as ``path -> array`` (it took no other form), its best chance.
Writes the head of bench/doctor_corpus.md (its ``##`` sections are kept). ``--judge``
runs the corpus the way the CLI does instead (the card's torch model judging each
difference and residual by its effect; no "before") and writes the section "The corpus
through the CLI's path".
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import torch  # noqa: E402, F401  (before TensorFlow: the import-order trap)
import torchvision  # noqa: E402, F401
from doctor_corpus import PHOTOS, UNEXPLAINED, Case, cases, named_exactly, tf_cases  # noqa: E402
from doctor_md import write_section  # noqa: E402

from parity.doctor import diagnose_preprocessing  # noqa: E402
from parity.doctor.effect import ModelJudge  # noqa: E402
from parity.doctor.inputs import as_path_function  # noqa: E402
from parity.harness import RunConfig  # noqa: E402
from parity.local import LocalSession  # noqa: E402
from parity.zoo import get_card  # noqa: E402


def _old_doctor(commit: str) -> Any:
    source = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{commit}:parity/doctor.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "doctor_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("doctor_before", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _verdict(finding: Any, expected: tuple[str, ...], before: bool) -> tuple[bool, str]:
    if not expected:
        return finding.status == "ok", finding.status
    if finding.status != "problem":
        return False, finding.status
    if before:
        label = finding.evidence.get("best_candidate", "")
        factors = [f.strip() for f in label.split(" + ")] if label else []
    else:
        factors = finding.evidence.get("factors", [])
    return named_exactly(factors, expected), " + ".join(factors) or "unexplained"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="3ce24e2", help="commit of the doctor before")
    parser.add_argument("--no-tf", action="store_true", help="skip the TF/Keras pipelines")
    parser.add_argument("--judge", action="store_true", help="as the CLI: with the model")
    args = parser.parse_args()
    card = get_card("resnet18")
    if args.judge:
        return judged(args)
    old = _old_doctor(args.before)
    corpus: list[Case] = cases() + ([] if args.no_tf else tf_cases())
    corpus += [Case(name, fn, ("<unexplained>",), PHOTOS) for name, fn in UNEXPLAINED]
    rows: list[str] = []
    score = {(when, kind): 0 for when in ("now", "before") for kind in ("fault", "control")}
    for case in corpus:
        start = time.perf_counter()
        now = diagnose_preprocessing(card, case.pipeline, case.images)
        seconds = time.perf_counter() - start
        path_fn, form = as_path_function(case.pipeline, card.preprocess, case.images[0])
        then = old.diagnose_preprocessing(card, path_fn, case.images)
        if case.expected == ("<unexplained>",):
            ok_now = now.cause.startswith("unexplained:")
            ok_then, said_then = False, then.evidence.get("best_candidate", then.status)
            said_now = "unexplained" if ok_now else now.cause[:60]
        else:
            ok_now, said_now = _verdict(now, case.expected, before=False)
            ok_then, said_then = _verdict(then, case.expected, before=True)
        kind = "fault" if case.expected else "control"
        score["now", kind] += ok_now
        score["before", kind] += ok_then
        expected = " + ".join(case.expected) or "clean"
        rows.append(
            f"| {case.name} | {form} | {len(case.images)} | {expected} | "
            f"{'yes' if ok_then else 'no'}: {said_then} | {'yes' if ok_now else 'no'}: "
            f"{said_now} | {seconds:.1f} |"
        )
        print(rows[-1], flush=True)
    faults = sum(1 for c in corpus if c.expected)
    controls = len(corpus) - faults
    summary = (
        f"faults named exactly: before {score['before', 'fault']}/{faults}, now "
        f"{score['now', 'fault']}/{faults}; clean controls left clean: before "
        f"{score['before', 'control']}/{controls}, now {score['now', 'control']}/{controls}"
    )
    lines = [
        "# parity doctor: the preprocessing corpus (tests/doctor_corpus.py)",
        "",
        f"Measured by `bench/doctor_corpus.py` on resnet18's card, {time.strftime('%Y-%m-%d')}, "
        "2 shared CPU cores (seconds are wall time under load).",
        "",
        f"**{summary}** (the faults include one difference no factor models, which must be "
        "reported as unexplained).",
        "",
        "| case | input form | images | expected | before (commit "
        f"{args.before}) | now | s (now) |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    path = ROOT / "bench" / "doctor_corpus.md"
    kept = path.read_text().partition("\n## ")[2] if path.exists() else ""
    path.write_text("\n".join(lines) + (f"\n## {kept}" if kept else ""))
    print(summary)


def judged(args: argparse.Namespace) -> None:
    """The corpus as the CLI runs it: the card's model judges differences by effect."""
    session = LocalSession(RunConfig(model="resnet18"))
    corpus: list[Case] = cases() + ([] if args.no_tf else tf_cases())
    corpus += [Case(name, fn, ("<unexplained>",), PHOTOS) for name, fn in UNEXPLAINED]
    rows, right, times = [], {"fault": 0, "control": 0}, []
    for case in corpus:
        judge = ModelJudge(session.model().module, session.taps, session.policy, "resnet18", False)
        start = time.perf_counter()
        now = diagnose_preprocessing(session.card, case.pipeline, case.images, judge=judge)
        times.append(time.perf_counter() - start)
        if case.expected == ("<unexplained>",):
            ok, said = now.cause.startswith("unexplained:"), now.cause[:60]
        else:
            ok, said = _verdict(now, case.expected, before=False)
        right["fault" if case.expected else "control"] += ok
        expected = " + ".join(case.expected) or "clean"
        rows.append(
            f"| {case.name} | {expected} | {'yes' if ok else 'no'}: {said} | {times[-1]:.1f} |"
        )
        print(rows[-1], flush=True)
    faults = sum(1 for c in corpus if c.expected)
    summary = (
        f"faults named exactly {right['fault']}/{faults}, clean controls left clean "
        f"{right['control']}/{len(corpus) - faults}"
    )
    print(summary)
    write_section(
        "The corpus through the CLI's path (with the model)",
        [
            f"`bench/doctor_corpus.py --judge`, {time.strftime('%Y-%m-%d')}: resnet18's card "
            "and calibrated weights judge each difference and the search's residuals by their "
            "effect on the taps (parity/doctor/effect.py), as `parity doctor` does; seconds "
            "are wall time on 2 shared cores under load.",
            "",
            f"**{summary}**; median {sorted(times)[len(times) // 2]:.1f} s per check.",
            "",
            "| case | expected | now | s |",
            "|---|---|---|---|",
            *rows,
        ],
    )


if __name__ == "__main__":
    main()
