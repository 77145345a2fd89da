"""Runs each backend in its own worker process (:mod:`parity.worker`); the parent holds numpy.

A run is a small graph of jobs, one per backend: the torch job first (weights, the
reference taps, the state_dict handed to the TF worker as a file, the ONNX exports), then
every other backend's job (the exports its framework makes, then its variants' runs)
once the jobs making its artifacts are done; up to ``jobs`` of them at a time.

Why processes and files rather than ``multiprocessing``: a worker is an interpreter that
imports one framework (never a fork of a parent holding torch or TF, no re-import of the
caller's ``__main__`` as spawn does), its exit status says how it died (``-11``: SIGSEGV),
and taps are ``.npy`` files in the run directory that the parent memory-maps: measured in
``bench/bench_workers.py`` against shared memory. A worker of a backend with heavy imports
(torch, TensorFlow) is forked from a resident server that imported them once, with the
worker's exact environment (:mod:`parity.forkserver`); every other one starts fresh.

A worker that dies (a signal, an OOM kill) or overruns the per-task timeout is a result:
the task it was in fails with the signal, the artifact and the phase ("LiteRT crashed
(SIGSEGV) while loading model.tflite"), and a fresh worker runs the tasks it had left.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from parity import atomic, errors, forkserver
from parity.backends import backends, export_chain, get_exporter, maker
from parity.errors import ParityError
from parity.exported import Artifact
from parity.paths import cache_dir
from parity.runfiles import REFERENCE_TASK
from parity.threads import available_cores

#: Seconds a single task may take before its worker is killed (``--timeout``).
DEFAULT_TIMEOUT = 1800.0
_POLL = 0.1


def default_jobs() -> int:
    """Backends run side by side by default: one per core parity may use."""
    return available_cores()


def threads_per_worker(jobs: int, threads: int) -> int:
    """Runtime threads of each worker, so that ``jobs x threads <= cores``."""
    return max(1, min(threads, available_cores() // max(1, jobs)))


@dataclasses.dataclass
class Job:
    """One worker's work: a backend, the tasks it runs in order, the tasks it waits for.

    ``needs`` names tasks of other jobs (``reference``, ``export-<exporter>``): the job
    starts once each has an outcome (or its job ended without one). ``name`` is unique
    in a run: one backend can have several jobs, each waiting for different artifacts.
    """

    backend: str
    tasks: list[dict[str, Any]]
    needs: set[str] = dataclasses.field(default_factory=set)
    reference: bool = False
    state_dict: bool = False
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or self.backend


@dataclasses.dataclass
class TaskOutcome:
    """What a task left: its folder (taps, ``done.json``) or why it has none."""

    folder: Path
    record: dict[str, Any]

    @property
    def error(self) -> str | None:
        error: str | None = self.record.get("error")
        return error

    @property
    def artifact(self) -> Artifact | None:
        """The artifact the task ran on, as the worker recorded it."""
        record = self.record.get("artifact")
        return Artifact(**{**record, "path": Path(record["path"])}) if record else None


def plan(
    variant_names: Sequence[str],
    variants: dict[str, Any],
    external: dict[str, Any] | None,
    exporting: bool,
    with_reference: bool = True,
    cached: frozenset[str] = frozenset(),
    run: bool = True,
) -> list[Job]:
    """The jobs for ``variant_names`` (non-reference) and a file made elsewhere.

    ``with_reference``: the reference's backend runs first (weights, reference taps) and
    every other job waits for its ``reference`` task (the weights handed over as a file),
    not for its exports; without it (no torch here: a bundle's goldens-only check, or a
    cached reference) nothing waits for it. ``cached``: exporters whose artifact is
    already in the cache: no worker is started to export them (a warm run of ONNX Runtime
    starts no torch worker). A backend's runs are grouped by the artifacts they wait for,
    so in a cold run each group starts as soon as its files are made (LiteRT's fp32 runs
    while the int8 file is still converting) instead of after every export. ``run=False``:
    the exports only.
    """
    jobs: dict[tuple[str, frozenset[str]], Job] = {}
    reference = next(v for v in variants.values() if v.reference)
    first = Job(reference.family, [], reference=with_reference)
    jobs[first.backend, frozenset()] = first
    start = {REFERENCE_TASK} if with_reference else set()

    def job(backend: str, waits: frozenset[str] = frozenset()) -> Job:
        if (backend, waits) not in jobs:
            count = sum(1 for other, _ in jobs if other == backend)
            name = backend if count == 0 else f"{backend}-{count + 1}"
            needs = set(waits) | (start if backend != first.backend else set())
            jobs[backend, waits] = Job(backend, [], needs=needs, name=name)
        return jobs[backend, waits]

    exported: set[str] = set()
    for name in variant_names:
        variant = variants[name]
        waits: set[str] = set()
        if exporting and variant.exporter is not None and variant.exporter not in cached:
            for exporter in export_chain(variant.exporter):
                owner = maker(exporter).name
                if exporter not in exported:
                    exported.add(exporter)
                    job(owner).tasks.append(
                        {"kind": "export", "name": f"export-{exporter}", "exporter": exporter}
                    )
                if "state_dict" in get_exporter(exporter).handoff:
                    first.state_dict = True
                if owner != variant.family:
                    waits.add(f"export-{exporter}")
        if run:
            job(variant.family, frozenset(waits)).tasks.append(
                {"kind": "run", "name": name, "variant": name}
            )
    if external is not None:
        job(external["runtime"]).tasks.append({"kind": "external", "name": "external", **external})
    for each in jobs.values():  # exports before runs
        each.tasks.sort(key=lambda t: t["kind"] != "export")
    return [j for j in jobs.values() if j.tasks or j.reference]


def spread(jobs: list[Job], slots: int) -> list[Job]:
    """Split the runs of the longest run-only job in two while a worker slot would stay idle,
    or while that job holds more than its share (1/``slots``) of all the runs and at least
    two per slot (fewer are not worth another worker's start).

    A warm check of one backend (ONNX Runtime only) is one job: its variants then run in
    two workers at once instead of one after another (``bench/bench_speed.py``); in a warm
    check of ONNX Runtime, Keras and LiteRT, LiteRT's ten runs are two jobs, so its runs
    are no longer the one worker everything waits for (``bench/forkserver.md``).
    """
    jobs = [dataclasses.replace(j, tasks=list(j.tasks), needs=set(j.needs)) for j in jobs]
    while True:
        splittable = [
            j for j in jobs
            if not j.reference and len(j.tasks) > 1 and all(t["kind"] == "run" for t in j.tasks)
        ]  # fmt: skip
        if not splittable:
            break
        job = max(splittable, key=lambda j: len(j.tasks))
        runs, count = sum(len(j.tasks) for j in jobs), len(job.tasks)
        more_than_its_share = count * slots > runs and count >= 2 * slots
        if len(jobs) >= slots and not more_than_its_share:
            break
        half = len(job.tasks) // 2
        jobs.append(
            Job(job.backend, job.tasks[half:], set(job.needs), name=f"{job.name}+{len(jobs)}")
        )
        del job.tasks[half:]
    return jobs


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


class Runs:
    """Launches the jobs of one run in worker processes and collects their outcomes."""

    def __init__(
        self,
        run_dir: Path,
        context: dict[str, Any],
        jobs: int,
        timeout: float = DEFAULT_TIMEOUT,
        progress: Callable[[str], None] = lambda message: None,
        on_outcome: Callable[[str, TaskOutcome], None] | None = None,
    ) -> None:
        self.run_dir = run_dir
        #: The model under test, as the workers get it (:class:`parity.context.ModelContext`).
        self.context = context
        self.jobs = max(1, jobs)
        self.timeout = timeout
        self.progress = progress
        #: Called with each task's outcome as it is recorded (while the other workers run).
        self.on_outcome = on_outcome
        self.outcomes: dict[str, TaskOutcome] = {}
        self.failed_exports: dict[str, str] = {}
        self.lock = threading.Lock()

    def run(self, jobs: list[Job]) -> dict[str, TaskOutcome]:
        """Run every job (once the tasks it needs are settled, ``self.jobs`` at a time)."""
        pending = {j.name: j for j in jobs}
        settled: set[str] = set()  # tasks of ended jobs, with or without an outcome

        def ready(job: Job) -> bool:
            return all(n in self.outcomes or n in settled for n in job.needs)

        for preload in {_preload(j.backend) for j in jobs}:  # imports begin while torch runs
            forkserver.server(preload, _worker_env())
        costs, started = JobCosts.of(self.context), {}
        with concurrent.futures.ThreadPoolExecutor(self.jobs) as pool:
            running: dict[concurrent.futures.Future[None], Job] = {}
            while pending or running:
                startable = costs.longest_first(j for j in pending.values() if ready(j))
                for job in startable[: self.jobs - len(running)]:
                    del pending[job.name]
                    started[job.name] = time.monotonic()
                    running[pool.submit(self._job, job)] = job
                if not running:
                    raise RuntimeError(f"worker jobs wait on each other: {sorted(pending)}")
                finished, _ = concurrent.futures.wait(
                    running, timeout=_POLL, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for future in finished:
                    ended = running.pop(future)
                    settled.update(t["name"] for t in ended.tasks)
                    settled.update([REFERENCE_TASK] if ended.reference else [])
                    future.result()  # a ParityError (bad input) propagates
                    costs.measured(ended, time.monotonic() - started[ended.name])
        costs.save()
        return self.outcomes

    def _job(self, job: Job) -> None:
        tasks = list(job.tasks)
        reference = job.reference
        while tasks or reference:
            tasks = [t for t in tasks if not self._blocked(t)]
            if not tasks and not reference:
                return
            crashed = self._launch(job, tasks, reference)
            reference = False
            finished = {t["name"] for t in tasks if t["name"] in self.outcomes}
            if job.reference and REFERENCE_TASK not in self.outcomes:
                self._reference_failed(f"the torch reference could not run: {crashed}", tasks)
                return
            tasks = [t for t in tasks if t["name"] not in finished]

    def _reference_failed(self, message: str, tasks: list[dict[str, Any]]) -> None:
        """The reference's worker died before the reference: it and the tasks of its job
        fail with ``message`` (a failed export blocks the runs of its artifact)."""
        self._record({"kind": "reference", "name": REFERENCE_TASK}, {"error": message})
        for task in tasks:
            if task["name"] not in self.outcomes:
                self._record(task, {"error": message})

    def _blocked(self, task: dict[str, Any]) -> bool:
        """A run whose artifact's export crashed fails with that crash, without running; an
        export fails the same way when the torch reference could not run."""
        exporter = task.get("exporter") or self._variant_exporter(task)
        if exporter is None:
            return False
        reference = self.outcomes.get(REFERENCE_TASK)
        if task["kind"] == "export" and reference is not None and reference.error:
            self._record(task, {"error": reference.error})  # every export needs torch's model
            return True
        for name in export_chain(exporter):
            if name in self.failed_exports and task["name"] not in self.outcomes:
                message = f"its artifact could not be made: {self.failed_exports[name]}"
                self._record(task, {"error": message})
                return True
        return False

    def _variant_exporter(self, task: dict[str, Any]) -> str | None:
        from parity.variants import VARIANTS

        if task["kind"] != "run":
            return None
        exporter: str | None = VARIANTS[task["variant"]].exporter
        return exporter

    def _record(self, task: dict[str, Any], record: dict[str, Any]) -> None:
        outcome = TaskOutcome(self.run_dir / task["name"], record)
        with self.lock:
            self.outcomes[task["name"]] = outcome
            if task["kind"] == "export" and record.get("error"):
                self.failed_exports[task["exporter"]] = record["error"]
        if self.on_outcome is not None:
            self.on_outcome(task["name"], outcome)

    def _launch(self, job: Job, tasks: list[dict[str, Any]], reference: bool) -> str | None:
        """One worker for ``tasks``; returns how it died, or None when it finished."""
        spec = {
            "backend": job.backend,
            "name": job.name,
            "context": self.context,
            "tasks": tasks,
            "reference": reference,
            "state_dict": job.state_dict,
        }
        path = self.run_dir / f"job.{job.name}.{time.monotonic_ns()}.json"
        path.write_text(json.dumps(spec, default=str))
        log = self.run_dir / f"phases.{job.name}.log"
        log.touch()
        offset = log.stat().st_size
        self.progress(f"worker {job.name}: {', '.join(t['name'] for t in tasks) or 'reference'}")
        stderr = (self.run_dir / f"stderr.{job.name}.log").open("ab")
        process = forkserver.start(
            ["-m", "parity.worker", str(path)], _worker_env(), stderr, _preload(job.backend)
        )
        task, phase, since = "worker", "starting", time.monotonic()
        timed_out = False
        try:
            while process.poll() is None:
                time.sleep(_POLL)
                latest = _last_phase(log, offset)
                if latest is not None and latest[0] != task:
                    task, phase, since = latest[0], latest[1], time.monotonic()
                elif latest is not None:
                    phase = latest[1]
                self._collect(tasks, reference)  # raises the worker's ParityError
                if time.monotonic() - since > self.timeout:
                    process.kill()
                    process.wait()
                    timed_out = True
        finally:  # whatever ends the wait (bad input, an interrupt): no worker left behind
            if process.poll() is None:
                process.kill()
                process.wait()
            stderr.close()
        self._collect(tasks, reference)
        latest = _last_phase(log, offset)
        if latest is not None:
            task, phase = latest
        code = process.wait()  # ended: its status
        if code == 0 and not timed_out:
            return None
        label = backends()[job.backend].description.removeprefix("needs ")
        if timed_out:
            how = f"timed out after {self.timeout:g} s"
        elif code < 0:
            how = f"crashed ({_signal_name(code)})"
        else:
            how = f"exited with status {code}"
        message = f"{label} worker {how} while {phase}"
        if not timed_out and code > 0:
            lines = (self.run_dir / f"stderr.{job.name}.log").read_text(errors="replace")
            message += f": {lines.strip().splitlines()[-1] if lines.strip() else 'no message'}"
        failing = next((t for t in tasks if t["name"] == task), None)
        if failing is not None and failing["name"] not in self.outcomes:
            self._record(failing, {"error": message})
        elif (
            failing is None and tasks and tasks[0]["name"] not in self.outcomes and task == "worker"
        ):
            self._record(tasks[0], {"error": message})
        return message

    def _collect(self, tasks: list[dict[str, Any]], reference: bool) -> None:
        names = [t for t in tasks if t["name"] not in self.outcomes]
        if reference and REFERENCE_TASK not in self.outcomes:
            names.insert(0, {"kind": "reference", "name": REFERENCE_TASK})
        for task in names:
            done = self.run_dir / task["name"] / "done.json"
            if done.is_file():
                record = json.loads(done.read_text())
                if record.get("parity_error"):
                    cls = getattr(errors, record.get("error_class", ""), ParityError)
                    raise cls(record["parity_error"])
                if record.get("internal_error"):
                    where = f"in parity's {task['name']} task, in a worker process"
                    raise errors.WorkerBug(f"{record['message']} ({where})") from (
                        errors.WorkerTraceback(record["internal_error"])
                    )
                self._record(task, record)


@dataclasses.dataclass
class JobCosts:
    """How long each job of a model took last time (``<cache>/timings/``), so a run starts
    its longest jobs first: the one everything else would wait for (warm ONNX Runtime,
    Keras and LiteRT: LiteRT's ten runs, or Keras' TensorFlow import with fresh workers).
    A job not seen before counts one second per task. Only the order depends on it."""

    path: Path
    seconds: dict[str, float]

    @classmethod
    def of(cls, context: dict[str, Any]) -> JobCosts:
        model = str(context["config"]["model"])
        path = cache_dir() / "timings" / f"{hashlib.sha256(model.encode()).hexdigest()[:16]}.json"
        try:
            seconds = {str(k): float(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError, AttributeError):  # none yet, or unreadable: unit costs
            seconds = {}
        return cls(path, seconds)

    @staticmethod
    def key(job: Job) -> str:
        names = sorted(t["name"] for t in job.tasks) + [REFERENCE_TASK] * job.reference
        return f"{job.backend}:{','.join(names)}:{forkserver.mode()}"  # forked: no import

    def longest_first(self, jobs: Iterable[Job]) -> list[Job]:
        return sorted(jobs, key=lambda j: -self.seconds.get(self.key(j), float(len(j.tasks))))

    def measured(self, job: Job, seconds: float) -> None:
        self.seconds[self.key(job)] = round(seconds, 2)

    def save(self) -> None:
        with contextlib.suppress(OSError, ParityError):  # a hint: a read-only cache keeps none
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic.write_text(self.path, json.dumps(self.seconds, indent=0, sort_keys=True))


def _worker_env() -> dict[str, str]:
    """A worker's environment: this process's, with its import path; hash randomisation off
    (tf2onnx's graph rewrites follow set order: export/tf2onnx.py)."""
    python_path = os.pathsep.join(p for p in sys.path if p)
    return dict(os.environ, PYTHONPATH=python_path, PYTHONHASHSEED="0")


def _preload(backend: str) -> tuple[str, ...]:
    found = backends().get(backend)
    return found.preload if found is not None else ()


def _last_phase(log: Path, offset: int) -> tuple[str, str] | None:
    with log.open("rb") as handle:
        handle.seek(offset)
        lines = handle.read().decode(errors="replace").strip().splitlines()
    if not lines:
        return None
    task, _, phase = lines[-1].partition("\t")
    return task, phase
