"""A backend's worker process: ``python -m parity.worker JOB.json``.

One worker runs one backend's tasks (exports its framework makes, its variants' runs, a
file made elsewhere) in a process that imports only that framework. It talks to the
parent (:mod:`parity.workers`) through files in the run directory:

* ``batch.npy`` (written once by the parent), ``reference/<tap>.npy`` and
  ``weights.json`` + ``state_dict.npz`` (written by the torch worker);
* ``images.npy`` (``parity eval``: the dataset, preprocessed by the parent), run in
  chunks by ``eval`` tasks, which write ``<task>/logits.npy``;
* ``<task>/<tap>.npy`` + ``<task>/done.json`` per finished task (``error`` set when the
  runtime failed; ``parity_error`` for bad input and ``internal_error``, the traceback,
  for a bug in parity's own code: the parent raises both);
* ``phases.<job>.log``: one line per phase entered (``task<TAB>phase``), so a crash
  or a hang names what it was doing.

``PARITY_WORKER_FAULT=<task>:<phase word>[:hang|:bug]`` (comma-separated) makes the worker
SIGKILL itself (or hang, or raise an exception from parity's own code) when it enters that
phase of that task: the fault injector of the crash, timeout and internal-error tests.
"""

from __future__ import annotations

import functools
import json
import os
import pickle
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from parity import lazy
from parity.context import STATE_DICT, WEIGHTS, ModelContext
from parity.errors import ParityError, RuntimeFailure, environment_error
from parity.runfiles import FAULT_ENV, REFERENCE_TASK, load_arrays, save_arrays

if TYPE_CHECKING:
    from parity.artifacts import BuildContext
    from parity.weights import Weights

__all__ = ["FAULT_ENV", "REFERENCE_TASK", "load_arrays", "main", "save_arrays"]


class Phases:
    """Appends ``task<TAB>phase`` lines, flushed at once, for the parent to read."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        faults = (f.split(":") for f in os.environ.get(FAULT_ENV, "").split(",") if f)
        self.faults = {(f[0], f[1]): f[2] if len(f) > 2 else "kill" for f in faults}

    def enter(self, task: str, phase: str) -> None:
        os.write(self.fd, f"{task}\t{phase}\n".encode())
        fault = self.faults.get((task, phase.split()[0]))
        if fault == "hang":
            time.sleep(86400)
        elif fault == "bug":
            raise AttributeError(f"injected bug in parity while {phase} ({task})")
        elif fault is not None:
            os.kill(os.getpid(), signal.SIGKILL)


def _artifact_record(artifact: Any) -> dict[str, Any] | None:
    if artifact is None:
        return None
    return {
        "exporter": artifact.exporter,
        "path": str(artifact.path),
        "key": artifact.key,
        "metadata": artifact.metadata,
        "built": artifact.built,
    }


def _done(folder: Path, **record: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "done.json.tmp"
    tmp.write_text(json.dumps(record, default=str))
    tmp.rename(folder / "done.json")


class Built:
    """What this worker builds once for its tasks, from the job's :class:`ModelContext`:
    the batch, the weights (handed over, or loaded here), the artifact cache.

    Its tasks call the stage functions (:mod:`parity.build`, :mod:`parity.execute`); a
    task that judges in-process (the doctor's, a file made elsewhere) gets a
    :class:`parity.local.LocalSession` over the same context (:meth:`session`).
    """

    def __init__(self, context: ModelContext) -> None:
        from parity.artifacts import ArtifactCache
        from parity.bundle import Bundle

        config = context.config
        self.context = context
        self.batch = context.batch()
        #: The weights the torch worker handed over, when it had before this worker began.
        self.handed = context.handed()
        self.cache = ArtifactCache(config.cache_root, rebuild=config.rebuild)
        self.bundle = Bundle(config.bundle) if config.bundle is not None else None
        self._weights: dict[bool, Weights] = {}

    def weights(self, module: bool = False) -> Weights:
        """The weights under test: those handed over, or (``module``: a torch variant needs
        the module itself; or none were handed) the torch module loaded here, once."""
        from parity.build import load_weights

        handed = None if module else self.handed
        loaded = handed is None
        if loaded not in self._weights:
            self._weights[loaded] = load_weights(self.context, handed)
        return self._weights[loaded]

    @functools.cached_property
    def build(self) -> BuildContext:
        from parity.build import build_context

        return build_context(self.context, self.weights, self.cache, self.handed)

    def session(self) -> Any:
        from parity.local import LocalSession

        return LocalSession.of(self.context, self.batch, self.handed)


def _reference(built: Built, run_dir: Path, phases: Phases, state_dict: bool) -> None:
    from parity.build import reference, weights_sha256, weights_source
    from parity.weights import class_names

    phases.enter(REFERENCE_TASK, "running the torch reference (or reading it from the cache)")
    context = built.context
    ran = reference(context, built.weights, built.batch, built.handed)
    save_arrays(run_dir / REFERENCE_TASK, dict(ran.taps))
    if state_dict:
        phases.enter(REFERENCE_TASK, "writing the state_dict for the other workers")
        np.savez(run_dir / STATE_DICT, **built.weights().state_dict_numpy())  # type: ignore[arg-type]
    sha256 = weights_sha256(context, built.weights, built.handed)
    class_names(context.card)  # cached for the parent (parity eval's class folders)
    record = {"source": weights_source(context), "sha256": sha256}
    (run_dir / WEIGHTS).write_text(json.dumps(record))
    _done(run_dir / REFERENCE_TASK, seconds=ran.seconds, source=ran.source)


def _task(built: Built, task: dict[str, Any], run_dir: Path, phases: Phases) -> None:
    from parity.build import artifact as made
    from parity.execute import execute
    from parity.variants import VARIANTS

    name, folder = task["name"], run_dir / task["name"]
    start = time.perf_counter()
    artifact = None
    try:
        if task["kind"] == "export":
            phases.enter(name, f"exporting {task['exporter']}")
            artifact = made(built.build, task["exporter"])
            _done(folder, artifact=_artifact_record(artifact), seconds=time.perf_counter() - start)
            return
        if task["kind"] == "doctor":
            from parity.doctor import run_doctor
            from parity.doctor.registry import doctor_inputs

            lazy.ISOLATED = False  # the doctor's checks load torch and TensorFlow (torch first)
            phases.enter(name, f"diagnosing {built.context.card.name}")
            session = built.session()
            inputs = doctor_inputs(session, task["options"])
            findings = run_doctor(session, task["checks"], inputs)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "findings.pkl").write_bytes(pickle.dumps(findings))
            _done(folder, seconds=time.perf_counter() - start)
            return
        if task["kind"] == "external":
            from parity.external import check_external

            phases.enter(name, f"loading {Path(task['path']).name}")
            result = check_external(
                built.session(), Path(task["path"]), task["runtime"], task["tap_map"],
                task["input_layout"], bool(task.get("golden")),
            )  # fmt: skip
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "result.pkl").write_bytes(pickle.dumps(result))
            _done(folder, seconds=time.perf_counter() - start)
            return
        variant = VARIANTS[task["variant"]]
        if variant.runs_on == "module":  # a torch variant that is not the reference
            phases.enter(name, "loading the torch module")
            source, label = built.weights(module=True).module, "the torch module"
        else:
            built.cache.rebuild = False  # --rebuild: its export task rebuilt it already
            phases.enter(name, f"reading the {variant.exporter} artifact")
            assert variant.exporter is not None
            artifact = source = made(built.build, variant.exporter, built.bundle)
            label = artifact.path.name
        phases.enter(name, f"loading {label}")
        if task["kind"] == "eval":
            seconds = _evaluate(built, task, source, label, run_dir, phases)
            _done(folder, artifact=_artifact_record(artifact), seconds=seconds)
            return
        threads, count = built.context.config.threads, len(built.batch)
        ran = execute(
            variant, source, built.batch, built.context.taps, threads,
            lambda: phases.enter(name, f"running {label} on {count} images"),
        )  # fmt: skip
        phases.enter(name, "writing the taps")
        save_arrays(folder, dict(ran.outputs))
        _done(
            folder,
            artifact=_artifact_record(artifact),
            seconds=time.perf_counter() - start,
            executed=ran.executed,
            located=dict(ran.located),
        )
    except RuntimeFailure as exc:  # a runtime or converter failing: a failed result
        record = _artifact_record(exc.artifact or artifact)
        _done(folder, artifact=record, error=str(exc), seconds=time.perf_counter() - start)


def _evaluate(
    built: Built, task: dict[str, Any], source: Any, label: str, run_dir: Path, phases: Phases
) -> float:
    """``parity eval``: the variant's logits on ``images.npy`` in chunks (taps off), written
    as ``<task>/logits.npy``; returns the inference seconds."""
    from parity.evaluate.running import eval_runner
    from parity.runner import OUTPUT
    from parity.variants import VARIANTS

    name, variant = task["name"], VARIANTS[task["variant"]]
    images = np.load(run_dir / "images.npy", mmap_mode="r")
    size = int(task["batch_size"])
    device = task.get("device", "cpu")
    if device != "cpu":
        phases.enter(name, f"loading {label} on {device}")
    runner = eval_runner(variant, source, built.context.config.threads, device)
    logits, seconds = [], 0.0
    with runner:
        for first in range(0, len(images), size):
            chunk = np.ascontiguousarray(images[first : first + size])
            last = first + len(chunk)
            phases.enter(name, f"running {label} on images {first + 1}-{last} of {len(images)}")
            logits.append(runner.run(chunk, taps=())[OUTPUT].reshape(len(chunk), -1))
            seconds += runner.last_inference_time
    save_arrays(run_dir / name, {"logits": np.concatenate(logits)})
    return seconds


def main(argv: list[str]) -> int:
    job_path = Path(argv[0])
    job = json.loads(job_path.read_text())
    context = ModelContext.from_dict(job["context"])
    lazy.ISOLATED = True
    lazy.TF_THREADS = context.config.threads
    run_dir = job_path.parent
    phases = Phases(run_dir / f"phases.{job.get('name', job['backend'])}.log")
    phases.enter("worker", "importing parity")
    names = [REFERENCE_TASK] * bool(job.get("reference")) + [t["name"] for t in job["tasks"]]
    current = names[0] if names else "worker"  # what the parent reads an error from
    try:
        built = Built(context)
        if job.get("reference"):
            _reference(built, run_dir, phases, job.get("state_dict", False))
        for task in job["tasks"]:
            current = task["name"]
            _task(built, task, run_dir, phases)
    except ParityError as exc:
        _done(run_dir / current, parity_error=str(exc), error_class=type(exc).__name__)
    except RuntimeFailure as exc:  # torch failed on the reference: it and its job fail
        _done(run_dir / current, error=str(exc))
    except Exception as exc:  # a bug in parity: the parent raises it (exit 3)
        refused = environment_error(exc, f"parity's {current} task")  # e.g. a full disk
        if refused is not None:
            _done(run_dir / current, parity_error=str(refused), error_class="ParityError")
            return 0
        message = f"{type(exc).__name__}: {str(exc).strip()}"
        _done(run_dir / current, internal_error=traceback.format_exc(), message=message)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
