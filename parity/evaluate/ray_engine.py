"""``parity eval --engine ray``: the same evaluation as a Ray Dataset on a Ray cluster.

The driver (this process: numpy and Ray, no framework) makes the weights and every
artifact as the local engine does (worker processes, the artifact cache), then runs one
streaming Ray Dataset whose rows are the evaluation's batches (``batch_size`` images each,
cut exactly where the local engine cuts them, so every runtime sees the same batches and
gives the same bytes)::

    batches ─► preprocess (Ray tasks: the card's hashed spec, parity.preprocess)
            ─► torch reference (a pool of actors: logits once per batch, shared)
            ─► one pool of actors per variant (each loads its artifact once, one framework
               per actor process, as the workers) ─► score (tasks) ─► the driver adds up

The artifacts and the weights travel through Ray's object store (every node gets them, no
shared folder needed); the images are read where a task runs (the dataset on shared
storage for a multi-node cluster). The result is the local engine's
:class:`~parity.evaluate.EvalResult`, the same JSON and table.

Faults: an actor that dies (a signal, an OOM kill) is restarted by Ray and its batches are
retried; an actor that dies :data:`CRASH_LIMIT` times on one batch (or while loading)
fails that variant with the images it was on, as a worker crash does locally. A runtime
failing on a batch (:class:`~parity.errors.RuntimeFailure`) fails its variant; the other
variants carry on. Bad input is bad input (exit 2); any other exception is a bug in parity
and fails the run (exit 3). No image is dropped: the driver checks that every batch came
back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity.errors import ParityError, RuntimeFailure
from parity.evaluate.results import EvalResult, VariantScore, score_batch
from parity.evaluate.running import (
    EvalConfig,
    OnBatch,
    Prepared,
    Progress,
    eval_runner,
    open_session,
    select,
)
from parity.scratch import owned_temporary

#: An actor that died this many times on one batch (or while loading) fails its variant.
CRASH_LIMIT = 2
#: Object store of a local cluster (bytes): a few dozen batches in flight, then spilling.
LOCAL_OBJECT_STORE = 1 << 30
#: Memory Ray reserves for each actor (bytes): the scheduler places no more actors on a
#: node than its memory holds. The largest measured actor (torch, mobilenet_v2, batch 32)
#: peaked at 1.75 GiB; ONNX Runtime 0.8, LiteRT 0.5 (bench/ray_eval.md).
ACTOR_MEMORY = 2 << 30
#: Batches queued at one actor (one running, one being pulled): bounds its input memory.
IN_FLIGHT_PER_ACTOR = 2
#: Test-only fault injector: ``<variant>:<n>`` makes the first actor of that variant hang
#: in its n-th batch (once per evaluation) until the test kills it; ``<variant>:<k>:kill``
#: makes every actor of that variant SIGKILL itself on batch ``k`` (a crash loop).
FAULT_ENV = "PARITY_RAY_FAULT"


@dataclasses.dataclass(frozen=True)
class RayOptions:
    """Where the evaluation runs. ``address=None``: a local cluster sized to this machine."""

    address: str | None = None
    #: CPUs of a local cluster (default: this machine's).
    num_cpus: int | None = None
    #: Object store of a local cluster, bytes.
    object_store_memory: int = LOCAL_OBJECT_STORE
    #: Most actors per variant (default: what the cluster's CPUs allow).
    max_actors: int | None = None


def evaluate_ray(
    config: EvalConfig,
    options: RayOptions = RayOptions(),
    progress: Progress = lambda message: None,
    on_batch: OnBatch = lambda done, total: None,
) -> EvalResult:
    """:func:`~parity.evaluate.evaluate` on a Ray cluster: the same result, the same rules
    (``n/a`` variants, failed variants, the reference failing fails every variant)."""
    try:
        import ray
    except ImportError:
        raise ParityError("--engine ray needs Ray: pip install 'parity[ray]'") from None
    from parity.variants import REFERENCE

    start = time.perf_counter()
    started = not ray.is_initialized()
    try:
        if started and options.address is not None:  # a wrong address fails before exports
            _start(ray, options)
        session, variants = open_session(config, progress)
        payloads, failures = _build(session, [v.name for v in variants[1:]], progress)
        prepared = select(config, session, variants)
        for name in prepared.names:
            if name in failures:
                prepared.scores[name].error = failures[name]
        running = [n for n in prepared.names if n not in failures]
        if started and options.address is None:  # a local cluster, once the exports are made
            _start(ray, options)
        progress(f"Ray cluster: {_describe(ray.cluster_resources())}")
        rows = _dataset(ray, prepared, options, running, payloads)
        progress(
            f"evaluating {len(prepared.indices)} images with torch, "
            f"{', '.join(running) or 'nothing else'} on Ray"
        )
        parts = _collect(rows, prepared, progress, on_batch)
    finally:
        if started and ray.is_initialized():
            ray.shutdown()
    reference = parts.pop(REFERENCE)
    for name in (REFERENCE, *running):
        score, part = prepared.scores[name], reference if name == REFERENCE else parts[name]
        if reference.error is not None and part.error is None:
            part.error = f"the torch reference failed on the dataset: {reference.error}"
        if part.error is not None:  # a failed variant has no counts, as in the local engine
            part = VariantScore(name, error=part.error, seconds=part.seconds)
        score.absorb(part)
    return prepared.result(start)


def _build(
    session: Any, names: Sequence[str], progress: Progress
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Weights and artifacts, made by the local workers (as the local engine does): what
    each actor needs (the state_dict or the artifact's files), and the variants that
    cannot run (their artifact could not be made)."""
    from parity.backends import export_chain, get_exporter
    from parity.plan import plan
    from parity.prefetch import run_workers
    from parity.runfiles import REFERENCE_TASK
    from parity.variants import REFERENCE, VARIANTS

    def exports_only(jobs: list[Any]) -> None:
        for job in jobs:
            job.tasks = [t for t in job.tasks if t["kind"] == "export"]
            job.state_dict = job.state_dict or job.reference
        jobs[:] = [j for j in jobs if j.tasks or j.reference]

    planned = plan(session.card, [VARIANTS[n] for n in names], exporting=session.bundle is None)
    applicable = [v.name for v in planned.applicable]
    with tempfile.TemporaryDirectory(prefix="parity-eval-") as tmp:
        outcomes, handed = run_workers(
            session, Path(tmp), applicable, reference=True, adjust=exports_only
        )
        session.take_reference(handed)
        failed = outcomes[REFERENCE_TASK].error
        weights = None if failed else session.handed.state_dict_numpy()
    module = {"card": session.card, "state_dict": weights, "sha256": session.reported_weights()[1]}
    payloads: dict[str, dict[str, Any]] = {REFERENCE: {**module, "error": failed}}
    failures: dict[str, str] = {}
    for name in applicable:
        variant = VARIANTS[name]
        if variant.exporter is None:  # a torch variant: the module, like the reference
            payloads[name] = payloads[REFERENCE]
            continue
        exporter = get_exporter(variant.exporter)
        if not session.cache.is_cached(exporter, session.context):
            why = next(
                (
                    outcomes[f"export-{e}"].error
                    for e in export_chain(variant.exporter)
                    if f"export-{e}" in outcomes and outcomes[f"export-{e}"].error
                ),
                "not in the cache after its export",
            )
            failures[name] = f"its artifact could not be made: {why}"
            continue
        artifact = session.artifact(variant)
        folder = artifact.path.parent
        files = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        payloads[name] = {"artifact": artifact, "files": files}
    progress(f"artifacts ready: {', '.join(sorted(payloads.keys() - {REFERENCE})) or 'none'}")
    return payloads, failures


def _start(ray: Any, options: RayOptions) -> None:
    if options.address is not None:
        try:
            ray.init(address=options.address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError) as exc:
            raise ParityError(
                f"--address {options.address}: {exc} (a cluster with token authentication, "
                "Ray's default, needs RAY_AUTH_MODE=token and its token here: "
                "~/.ray/auth_token or RAY_AUTH_TOKEN)"
            ) from None
        return
    ray.init(
        address="local",  # a new cluster, even where `ray start` left one (or its address file)
        num_cpus=options.num_cpus or os.cpu_count() or 1,
        object_store_memory=options.object_store_memory,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )


def _describe(resources: dict[str, float]) -> str:
    gib = resources.get("memory", 0) / (1 << 30)
    return f"{resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs, {gib:.1f} GiB"


def _dataset(
    ray: Any,
    prepared: Prepared,
    options: RayOptions,
    running: Sequence[str],
    payloads: dict[str, dict[str, Any]],
) -> Any:
    """The streaming pipeline over the batches (not executed yet)."""
    from ray.data import ActorPoolStrategy, DataContext

    from parity.variants import REFERENCE

    # The driver shows its own progress and reports every failure in the result.
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    config, size = prepared.config, prepared.config.batch_size
    resources = ray.cluster_resources()
    pools = 1 + len(running)
    # Every pool's first actor and one task fit at once (2 CPUs, 3 pools: 0.5 CPU each).
    cpus = min(float(config.threads), resources.get("CPU", 1.0) / (pools + 1))
    threads = max(1, int(cpus))
    most = options.max_actors or max(1, int(resources.get("CPU", 1.0) / (cpus * (pools + 1))))
    device = config.device
    gpus = 1 if device != "cpu" and resources.get("GPU", 0) >= 1 else 0
    ledger = ray.remote(num_cpus=0)(Ledger).remote()
    fault = os.environ.get(FAULT_ENV)
    images = prepared.images
    rows = [
        {
            "batch": k,
            "first": first,
            "indices": [prepared.indices[i] for i in range(first, min(first + size, len(images)))],
            "paths": [str(image.path) for image in images[first : first + size]],
            "names": [image.name for image in images[first : first + size]],
            "labels": [image.label for image in images[first : first + size]],
        }
        for k, first in enumerate(range(0, len(images), size))
    ]
    dataset = ray.data.from_items(rows, override_num_blocks=len(rows))
    dataset = dataset.map(_preprocess, fn_kwargs={"spec": prepared.spec}, num_cpus=cpus)
    total = len(images)
    for name in (REFERENCE, *running):
        payload = ray.put(payloads[name])
        dataset = dataset.map(
            VariantActor,
            fn_constructor_kwargs={
                "name": name, "payload": payload, "threads": threads, "total": total,
                "device": device if name == REFERENCE else "cpu", "ledger": ledger,
                "fault": fault,
            },
            compute=ActorPoolStrategy(
                min_size=1, max_size=most, max_tasks_in_flight_per_actor=IN_FLIGHT_PER_ACTOR
            ),
            num_cpus=cpus,
            num_gpus=gpus if name == REFERENCE else 0,
            memory=ACTOR_MEMORY,
        )  # fmt: skip
    return dataset.map(_score, fn_kwargs={"names": [REFERENCE, *running]}, num_cpus=cpus)


def _collect(
    dataset: Any, prepared: Prepared, progress: Progress, on_batch: OnBatch
) -> dict[str, VariantScore]:
    """Add up the scored batches; every batch must come back exactly once."""
    parts: dict[str, VariantScore] = {}
    seen: set[int] = set()
    actors: set[tuple[str, int, str]] = set()
    done, total = 0, len(prepared.images)
    for row in dataset.iter_rows():
        if row["parity_error"]:
            raise ParityError(row["parity_error"])
        seen.add(int(row["batch"]))
        for name, data in json.loads(row["scores"]).items():
            parts.setdefault(name, VariantScore(name)).absorb(VariantScore.from_dict(data))
        for name, pid, node in json.loads(row["actors"]):
            if (name, pid, node) not in actors:
                actors.add((name, pid, node))
                progress(f"{name}: actor pid {pid} on {node}")
        done += len(row["indices"])
        on_batch(done, total)
    expected = -(-total // prepared.config.batch_size)
    if len(seen) != expected:  # never a silent drop: Ray lost batches
        raise RuntimeError(f"Ray returned {len(seen)} of {expected} batches")
    return parts


# -- what runs on the cluster ------------------------------------------------------------


class Ledger:
    """Attempts per key (``<variant>:<batch>``, ``<variant>:load:<actor>``) that have not
    ended: an actor that died inside one left it open. One small actor per evaluation."""

    def __init__(self) -> None:
        self.open: Counter[str] = Counter()

    def begin(self, key: str) -> int:
        """Open an attempt; how many earlier ones died (never ended)."""
        self.open[key] += 1
        return self.open[key] - 1

    def end(self, key: str) -> None:
        self.open[key] -= 1


def _preprocess(row: dict[str, Any], spec: Any) -> dict[str, Any]:
    """A batch's images through the card's spec (the same function and bytes as locally)."""
    from parity.preprocess import preprocess_batch

    try:
        row["images"] = preprocess_batch([Path(p) for p in row["paths"]], spec)
        row["parity_error"] = ""
    except ParityError as exc:  # a corrupt image: bad input, exit 2 in the driver
        row["images"] = np.zeros((0,), np.float32)
        row["parity_error"] = str(exc)
    return row


class VariantActor:
    """One variant (or the reference) in one actor process: loads once, runs batches.

    Adds ``logits:<name>``, ``seconds:<name>``, ``error:<name>`` and ``actor:<name>`` to
    each row. A runtime error fails the batch for this variant only; dying here (a signal)
    leaves the attempt open in the :class:`Ledger`, so the retry after Ray's restart knows.
    """

    def __init__(
        self,
        name: str,
        payload: Any,
        threads: int,
        total: int,
        device: str,
        ledger: Any,
        fault: str | None,
    ) -> None:
        import ray

        from parity.variants import VARIANTS

        self.name, self.total, self.ledger, self.fault = name, total, ledger, fault
        self.variant = VARIANTS[name]
        context = ray.get_runtime_context()
        self.actor = (os.getpid(), context.get_node_id()[:12])
        self.runner: Any = None
        self.error: str | None = None
        self.calls = 0
        self.label, self.label_of = self.variant.family, "the torch module"
        key = f"{name}:load:{context.get_actor_id()}"
        died = ray.get(ledger.begin.remote(key))
        payload = ray.get(payload) if isinstance(payload, ray.ObjectRef) else payload
        if "artifact" in payload:
            self.label_of = payload["artifact"].path.name
        if payload.get("error"):  # the torch worker failed before the reference
            self.error = payload["error"]
        elif died >= CRASH_LIMIT:
            self.error = f"{self.label} actor died {died} times while loading {self.label_of}"
        else:  # parity's own errors other than bad input are bugs: they fail the run (exit 3)
            try:
                self.runner = eval_runner(self.variant, self._source(payload), threads, device)
                self.runner.activate()
            except ParityError as exc:
                self.error = f"parity_error:{exc}"
            except RuntimeFailure as exc:  # the runtime refusing its artifact
                self.error = str(exc)
        ledger.end.remote(key)

    def _source(self, payload: dict[str, Any]) -> Any:
        """The artifact written to a folder of this actor, or the torch module."""
        if "artifact" in payload:
            self.folder = owned_temporary("parity-ray-")
            artifact = payload["artifact"]
            for file, data in payload["files"].items():
                Path(self.folder.name, file).write_bytes(data)
            path = Path(self.folder.name, artifact.path.name)
            return dataclasses.replace(artifact, path=path)
        from parity import lazy
        from parity.weights import build_module, state_dict_sha256

        torch = lazy.torch()
        module = build_module(payload["card"])
        state = {k: torch.from_numpy(np.array(v)) for k, v in payload["state_dict"].items()}
        module.load_state_dict(state)
        module.eval()
        if state_dict_sha256(module.state_dict()) != payload["sha256"]:
            raise RuntimeError("the torch module's weights do not hash to the handed sha256")
        return module

    def _inject(self, batch: int) -> None:
        """The test-only faults of :data:`FAULT_ENV`."""
        import ray

        name, n, *kill = (self.fault or "::").split(":")
        if name != self.name:
            return
        if kill and int(n) == batch:
            os.kill(os.getpid(), signal.SIGKILL)
        if not kill and int(n) == self.calls and ray.get(self.ledger.begin.remote("fault")) == 0:
            time.sleep(86400)  # the fault test kills this actor here

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        import ray

        from parity.runner import OUTPUT

        images = row["images"]
        first, last = row["first"], row["first"] + len(row["indices"])
        logits, seconds, error = np.zeros((len(row["indices"]), 0), np.float32), 0.0, ""
        if self.error is not None:
            error = self.error
        elif not row["parity_error"]:
            key = f"{self.name}:{row['batch']}"
            died = ray.get(self.ledger.begin.remote(key))
            where = f"{self.label_of} on images {first + 1}-{last} of {self.total}"
            if died >= CRASH_LIMIT:
                error = f"{self.label} actor died {died} times while running {where}"
            else:
                self.calls += 1
                self._inject(row["batch"])
                try:
                    out = self.runner.run(np.array(images, np.float32), taps=())[OUTPUT]
                    logits = out.reshape(len(out), -1).astype(np.float32, copy=False)
                    seconds = self.runner.last_inference_time
                except ParityError as exc:
                    error = f"parity_error:{exc}"
                except RuntimeFailure as exc:  # the runtime failing on this batch
                    error = f"{exc} (while running {where})"
            self.ledger.end.remote(key)
        row[f"logits:{self.name}"] = logits
        row[f"seconds:{self.name}"] = seconds
        row[f"error:{self.name}"] = error
        row[f"actor:{self.name}"] = json.dumps(self.actor)
        return row


def _score(row: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """A batch's scores for every variant (small: counts and flips, no tensors)."""
    from parity.variants import REFERENCE

    parts: dict[str, dict[str, Any]] = {}
    labels = np.asarray(row["labels"])
    reference = np.asarray(row[f"logits:{REFERENCE}"])
    parity_error = row["parity_error"]
    for name in names:
        part = VariantScore(name, seconds=float(row[f"seconds:{name}"]))
        error = row[f"error:{name}"]
        if error.startswith("parity_error:"):
            parity_error = parity_error or error.removeprefix("parity_error:")
        elif error:
            part.error = error
        elif not row[f"error:{REFERENCE}"] and not parity_error:
            logits = np.asarray(row[f"logits:{name}"])
            score_batch(part, row["indices"], row["names"], labels, reference, logits)
        parts[name] = {**part.to_dict(), "seconds": part.seconds}  # unrounded
    actors = [(name, *json.loads(row[f"actor:{name}"])) for name in names]
    return {
        "batch": row["batch"],
        "indices": row["indices"],
        "scores": json.dumps(parts),
        "actors": json.dumps(actors),
        "parity_error": parity_error,
    }
