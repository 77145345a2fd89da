"""Backends in worker processes: a crash, a kill or a hang is a failed variant, not a dead run.

Every test runs the real CLI: the torch worker computes the reference, the ONNX Runtime,
Keras and LiteRT workers run real artifacts on the real fixtures. Faults are real
signals: the worker's test-only injector (``PARITY_WORKER_FAULT``) SIGKILLs or hangs it
at a named phase of a named task.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from parity import harness
from parity.backends import backends, markers
from parity.cli import main
from parity.harness import Session
from parity.judge import EarlyVerdicts
from parity.variants import VARIANTS
from parity.worker import FAULT_ENV
from parity.workers import Job, JobCosts, plan, spread

EXAMPLE = Path(__file__).parent / "data" / "backend_example"


def parity_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``parity ARGS`` in a fresh process (as a user runs it: torch not imported first)."""
    environment = dict(os.environ, **(env or {}))
    command = [sys.executable, "-m", "parity.cli", *args]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=1200)


def statuses(report: Path) -> dict[str, dict[str, str]]:
    data = json.loads(report.read_text())
    models = data.get("models", [data])
    return {v["name"]: v for m in models for v in m["variants"]}


def test_registry_is_derived_from_entry_points():
    assert {"torch", "onnxruntime", "keras", "litert"} <= set(backends())
    assert set(markers()) == set(backends())
    reference = [v for v in VARIANTS.values() if v.reference]
    assert [v.name for v in reference] == ["torch"] and reference[0].runs_on == "module"
    assert all(v.runs_on == ("artifact" if v.exporter else "module") for v in VARIANTS.values())


def test_plan_exports_in_the_worker_of_the_framework_that_makes_them():
    jobs = {j.name: j for j in plan(["ort_tf2onnx", "litert_int8"], VARIANTS, None, True)}
    assert jobs["torch"].reference and jobs["torch"].state_dict  # handed to the TF worker
    keras = [t["exporter"] for t in jobs["keras"].tasks]
    assert keras[0] == "keras" and {"tf2onnx", "tflite_int8"} <= set(keras)
    assert jobs["keras"].needs == {"reference"}  # the weights, not the torch job's exports
    assert jobs["onnxruntime"].needs == {"reference", "export-keras", "export-tf2onnx"}
    assert [t["name"] for t in jobs["litert"].tasks] == ["litert_int8"]


def test_plan_groups_runs_by_the_artifacts_they_wait_for():
    """A cold run starts each group of runs once its files exist, not after every export."""
    names = ["ort_dynamo", "ort_dynamo_noopt", "ort_torchscript", "litert_fp32", "litert_int8"]
    jobs = {j.name: j for j in plan(names, VARIANTS, None, True)}
    groups = {n: [t["name"] for t in j.tasks] for n, j in jobs.items() if n != "keras"}
    assert groups == {
        "torch": ["export-onnx_dynamo", "export-onnx_torchscript"],
        "onnxruntime": ["ort_dynamo", "ort_dynamo_noopt"],  # their own worker: needs torch's
        "onnxruntime-2": ["ort_torchscript"],
        "litert": ["litert_fp32"],
        "litert-2": ["litert_int8"],
    }
    assert jobs["onnxruntime"].needs == {"reference", "export-onnx_dynamo"}
    assert jobs["litert"].needs >= {"export-tflite_fp32"}
    assert "export-tflite_int8" not in jobs["litert"].needs


def test_plan_starts_no_exporting_worker_for_cached_artifacts():
    """A warm run (reference and artifacts cached) starts only the runtimes' own workers."""
    cached = frozenset({"onnx_dynamo", "tflite_int8"})
    names = ["ort_dynamo", "litert_int8", "ort_tf2onnx"]
    jobs = {j.name: j for j in plan(names, VARIANTS, None, True, False, cached)}
    assert set(jobs) == {"onnxruntime", "onnxruntime-2", "litert", "keras"}  # tf2onnx: not cached
    assert [t["exporter"] for t in jobs["keras"].tasks] == ["keras", "tf2onnx"]
    assert [t["name"] for t in jobs["litert"].tasks] == ["litert_int8"]
    assert not jobs["litert"].needs and not jobs["onnxruntime"].needs
    warm = [j.name for j in plan(names[:2], VARIANTS, None, True, False, cached)]
    assert warm == ["onnxruntime", "litert"]  # one worker per backend


def test_idle_worker_slots_take_half_of_a_lone_backends_runs():
    """A warm ONNX-only check runs its variants in two workers at once (``--jobs 2``)."""
    cached = frozenset({"onnx_dynamo", "onnx_torchscript"})
    names = ["ort_dynamo", "ort_dynamo_noopt", "ort_torchscript"]
    lone = plan(names, VARIANTS, None, True, False, cached)
    split = spread(lone, 2)
    assert [[t["name"] for t in j.tasks] for j in split] == [
        ["ort_dynamo"],
        ["ort_dynamo_noopt", "ort_torchscript"],
    ]
    assert len({j.name for j in split}) == 2
    four = plan([*names, "ort_tf2onnx"], VARIANTS, None, True, False, cached | {"tf2onnx"})
    wide = spread(four, 8)  # a bigger machine: one variant per worker, names stay unique
    assert sorted(len(j.tasks) for j in wide) == [1, 1, 1, 1]
    assert len({j.name for j in wide}) == 4
    busy = plan(["ort_dynamo", "litert_int8"], VARIANTS, None, True, False, cached)
    assert [j.name for j in spread(busy, 2)] == [j.name for j in busy]  # no idle slot
    # warm ONNX Runtime + Keras + LiteRT on two slots: LiteRT's 10 of the 15 runs would be
    # the one worker the others wait for; halved, no job holds more than its share
    runs = {"onnxruntime": 4, "keras": 1, "litert": 10}
    fifteen = [
        Job(b, [{"kind": "run", "name": f"{b}{i}"} for i in range(n)]) for b, n in runs.items()
    ]
    assert [(j.backend, len(j.tasks)) for j in spread(fifteen, 2)] == [
        ("onnxruntime", 4), ("keras", 1), ("litert", 5), ("litert", 5),
    ]  # fmt: skip
    cold = plan(names, VARIANTS, None, True)  # exports and the reference are never split
    tasks = sorted(t["name"] for j in cold for t in j.tasks)
    assert sorted(t["name"] for j in spread(cold, 8) for t in j.tasks) == tasks
    exporting = [j for j in spread(cold, 8) if any(t["kind"] == "export" for t in j.tasks)]
    assert [j.name for j in exporting] == ["torch"] and exporting[0].reference


def test_jobs_start_longest_first_by_what_they_took_last_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARITY_CACHE_DIR", str(tmp_path))
    keras = Job("keras", [{"kind": "run", "name": "keras"}])
    litert = Job("litert", [{"kind": "run", "name": f"litert{i}"} for i in range(10)])
    costs = JobCosts.of({"config": {"model": "mobilenet_v2"}})
    assert costs.longest_first([keras, litert]) == [litert, keras]  # unseen: a second a task
    costs.measured(keras, 9.5)  # fresh workers: TensorFlow's import is the long part
    costs.measured(litert, 7.0)
    costs.save()
    assert JobCosts.of({"config": {"model": "mobilenet_v2"}}).longest_first([litert, keras]) == [
        keras, litert,
    ]  # fmt: skip
    assert JobCosts.of({"config": {"model": "resnet18"}}).seconds == {}  # per model


@pytest.mark.torch
@pytest.mark.onnxruntime
@pytest.mark.litert
def test_killed_and_hung_workers_are_failed_variants_and_reports_are_written(
    session_for: Callable[[str], Session], tmp_path: Path
):
    """A SIGKILLed worker fails its task and a fresh one runs the rest (default timeout: no
    healthy task is raced against a limit); a hung one is killed after ``--timeout``, which
    here covers only the hang: the task hangs in its first phase, before any framework is
    imported, so the limit times the hang and nothing else (the worker's own start, which
    imports no framework, is timed on its own)."""
    names = ["ort_torchscript", "ort_dynamo", "litert_fp32", "litert_fp16"]
    session = session_for("mobilenet_v2")
    for name in names:  # exported and cached first: the runs only meet the faults
        session.artifact(VARIANTS[name])
    _ = session.reference
    report = tmp_path / "report.json"
    run = parity_cli(
        "run", "-q", "--summary", *(f"-r{name}" for name in names[::2] + names[3:]),
        "--json", str(report), env={FAULT_ENV: "litert_fp32:loading"},
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr
    variants = statuses(report)
    assert variants["ort_torchscript"]["status"] == "pass"
    assert variants["litert_fp16"]["status"] == "pass"  # a fresh LiteRT worker ran it
    killed = variants["litert_fp32"]
    assert killed["status"] == "error"
    assert "crashed (SIGKILL) while loading model.tflite" in killed["error"], killed
    hang = parity_cli(
        "run", "-q", "--summary", "-r", "ort_dynamo", "--timeout", "15", "--json", str(report),
        env={FAULT_ENV: "ort_dynamo:reading:hang"},
    )  # fmt: skip
    assert hang.returncode == 1, hang.stdout + hang.stderr
    hung = statuses(report)["ort_dynamo"]
    assert hung["status"] == "error"
    assert "timed out after 15 s while reading the onnx_dynamo artifact" in hung["error"], hung


@pytest.mark.torch
@pytest.mark.keras
def test_a_valid_keras_file_passes_and_a_crashing_keras_worker_is_a_failed_variant(
    session_for: Callable[[str], Session], tmp_path: Path
):
    path = tmp_path / "model.keras"
    path.write_bytes(session_for("mobilenet_v2").artifact(VARIANTS["keras"]).path.read_bytes())
    good = parity_cli("run", "-q", "--summary", "--artifact", str(path))
    assert good.returncode == 0, good.stdout + good.stderr  # it was exit 139 in one process
    report = tmp_path / "report.json"
    crashed = parity_cli(
        "run", "-q", "--summary", "--artifact", str(path), "-r", "ort_torchscript",
        "--json", str(report), env={FAULT_ENV: "external:loading"},
    )  # fmt: skip
    assert crashed.returncode == 1, crashed.stdout + crashed.stderr
    variants = statuses(report)
    assert variants["ort_torchscript"]["status"] == "pass"
    error = variants["external_keras"]["error"]
    assert "TensorFlow/Keras worker crashed (SIGKILL) while loading model.keras" in error


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_a_backend_is_one_package_and_one_registration_line(tmp_path: Path):
    """The example backend in tests/data/backend_example registers and runs like a built-in."""
    env = {"PYTHONPATH": os.pathsep.join([str(EXAMPLE), *sys.path])}
    listing = parity_cli("list", env=env)
    assert "ort_single_thread" in listing.stdout, listing.stderr
    report = tmp_path / "report.json"
    run = parity_cli("run", "-q", "--summary", "-r", "ort_single", "--json", str(report), env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert statuses(report)["ort_single_thread"]["status"] == "pass"


@pytest.mark.torch
@pytest.mark.onnxruntime
@pytest.mark.keras
def test_a_crashed_torch_reference_is_a_failed_run_with_reports_not_bad_input(
    session_for: Callable[[str], Session], parity_cache: Path, tmp_path: Path
):
    """The torch worker SIGKILLed while running the reference: every live check and every
    artifact torch makes fail naming the crash, golden checks are still judged, exit 1."""
    session_for("mobilenet_v2").artifact(VARIANTS["ort_torchscript"])  # cached: it runs
    cache = tmp_path / "cache"  # the weights and artifacts, but no cached reference
    cache.mkdir()
    for folder in ("weights", "artifacts"):
        (cache / folder).symlink_to(parity_cache / folder)
    env = {FAULT_ENV: "reference:running", "PARITY_CACHE_DIR": str(cache)}
    crash = "crashed (SIGKILL) while running the torch reference"
    reports = tmp_path / "reports"
    check = parity_cli(
        "check", "-q", "--summary", "-m", "mobilenet_v2", "-r", "ort_torchscript",
        "--report", str(reports), env=env,
    )  # fmt: skip
    assert check.returncode == 1, check.stdout + check.stderr
    assert "Traceback" not in check.stdout + check.stderr
    assert {p.suffix for p in reports.iterdir()} >= {".json", ".md", ".xml"}
    results = json.loads(next(reports.glob("*.json")).read_text())["models"][0]["variants"]
    by_mode = {(v["name"], v["mode"]): v for v in results}
    assert "the torch reference could not run" in by_mode[("ort_torchscript", "live")]["error"]
    assert crash in by_mode[("ort_torchscript", "live")]["error"]
    assert by_mode[("ort_torchscript", "golden")]["status"] == "pass"  # vs the stored goldens
    assert crash in by_mode[("torch", "golden")]["error"]
    report = tmp_path / "report.json"
    run = parity_cli(
        "run", "-q", "--summary", "--rebuild", "-r", "ort_torchscript", "-r", "keras",
        "--json", str(report), env=env,
    )  # fmt: skip
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    variants = statuses(report)
    assert set(variants) == {"ort_torchscript", "keras"}
    for variant in variants.values():  # the exports torch was to make never ran
        assert variant["status"] == "error", variant
        assert (
            "its artifact could not be made: the torch reference could not run"
            in (variant["error"])
        ), variant
        assert crash in variant["error"], variant


@pytest.mark.torch
@pytest.mark.onnxruntime
@pytest.mark.parametrize(
    ("fault", "task"), [("running", "ort_torchscript"), ("exporting", "export-onnx_torchscript")]
)
def test_a_bug_in_parity_inside_a_worker_is_an_internal_error_not_a_failed_variant(
    session_for: Callable[[str], Session], parity_cache: Path, tmp_path: Path, fault: str, task: str
):
    """An exception from parity's own code in a worker (injected: an AttributeError where
    the worker enters a phase) is exit 3 with the worker's traceback in the file, whether
    it is a run or an export; a runtime failing on its artifact stays exit 1."""
    session_for("mobilenet_v2").artifact(VARIANTS["ort_torchscript"])
    cache = tmp_path / "cache"  # its own logs; the session's weights (and export, to run it)
    cache.mkdir()
    for folder in ("weights", "reference", *(("artifacts",) if fault == "running" else ())):
        (parity_cache / folder).mkdir(exist_ok=True)
        (cache / folder).symlink_to(parity_cache / folder)
    env = {FAULT_ENV: f"{task}:{fault}:bug", "PARITY_CACHE_DIR": str(cache)}
    done = parity_cli("run", "-q", "--summary", "-r", "ort_torchscript", env=env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 3, done.stdout + done.stderr
    assert len(lines) == 1 and "internal error: WorkerBug: AttributeError: injected bug" in lines[0]
    assert f"parity's {task} task, in a worker process" in lines[0], lines
    (written,) = (cache / "logs").glob("traceback-*.txt")
    text = written.read_text()
    assert str(written) in lines[0]
    assert "parity/worker.py" in text and "in enter" in text and "WorkerTraceback" in text, text


def _without_seconds(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_seconds(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [_without_seconds(v) for v in value]
    return value


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_verdicts_judged_while_workers_run_are_those_judged_after(
    session_for: Callable[[str], Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    """A warm run judges each variant in a thread as its worker finishes: the report is,
    bitwise, the one judged after every worker ended (each verdict on its own outputs)."""
    _ = session_for("mobilenet_v2").reference  # cached: the run is warm
    argv = ["run", "-q", "-r", "ort_dynamo", "-r", "ort_dynamo_noopt", "-r", "ort_torchscript"]
    early: list[int] = []

    class Counted(EarlyVerdicts):
        def verdicts(self) -> dict[str, Any]:
            found = super().verdicts()
            early.append(len(found))
            return found

    class Off(EarlyVerdicts):
        def submit(self, name: str, obtained: Any) -> None:
            pass  # nothing judged early: every verdict after the workers

    reports = {}
    for name, kind in (("early", Counted), ("after", Off)):
        monkeypatch.setattr(harness, "EarlyVerdicts", kind)
        assert main([*argv, "--json", str(tmp_path / f"{name}.json")]) == 0
        reports[name] = _without_seconds(json.loads((tmp_path / f"{name}.json").read_text()))
    capsys.readouterr()
    assert early == [3]  # the first run judged all three early, the second none
    assert reports["early"]["variants"] == reports["after"]["variants"]
