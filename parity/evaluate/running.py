"""Running an evaluation: the parent (numpy only) preprocesses the images once, each
backend's worker process runs its variants over them, the parent scores the logits.
"""

from __future__ import annotations

import dataclasses
import functools
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from parity.errors import ParityError
from parity.evaluate.dataset import (
    ImageFolder,
    LabelledImage,
    scan_image_folder,
    select_indices,
    shard_indices,
)
from parity.evaluate.results import EvalResult, VariantScore, score_batch
from parity.preprocess import PreprocessSpec, preprocess_batch
from parity.workers import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from parity.runner import Runner
    from parity.session import Session
    from parity.variants import Variant
    from parity.workers import Job

DEFAULT_BATCH = 64
DEVICES = ("cpu", "cuda", "auto")

Progress = Callable[[str], None]
OnBatch = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What to evaluate."""

    data: Path
    model: str
    runtimes: Sequence[str] | None = None
    weights: str | None = None
    shard: tuple[int, int] | None = None
    limit: int | None = None
    batch_size: int = DEFAULT_BATCH
    threads: int = 2
    rebuild: bool = False
    #: Where the torch reference runs: ``cpu``, ``cuda`` (strict fp32, TF32 off) or
    #: ``auto`` (cuda when a GPU is usable). The other variants run where they run.
    device: str = "cpu"
    #: Backends run side by side in worker processes (``None``: one per core).
    jobs: int | None = None
    #: Seconds one task (an export, a variant's evaluation) may take.
    timeout: float = DEFAULT_TIMEOUT


def reference_device(device: str) -> str:
    """``cpu`` or ``cuda`` for ``--device``; a requested GPU that is not there is an error.

    Called in the torch worker (it asks torch whether a GPU is usable)."""
    if device not in DEVICES:
        raise ParityError(f"--device {device!r}: must be cpu, cuda or auto")
    if device == "cpu":
        return device
    from parity.backends.torch.runner import cuda_unavailable

    reason = cuda_unavailable()
    if reason is not None and device == "cuda":
        raise ParityError(f"--device cuda: {reason}")
    return "cpu" if reason is not None else "cuda"


def eval_runner(variant: Variant, source: Any, threads: int, device: str = "cpu") -> Runner:
    """The runner of one evaluation (taps off): on ``device`` for the reference (``cuda``
    is strict fp32, TF32 off; a GPU that is not there is bad input), else as in ``run``."""
    from parity.execute import make_runner

    if device != "cpu":
        device = reference_device(device)
    if device == "cpu":
        return make_runner(variant, source, threads)
    runner: Runner = variant.runner_class()(
        variant.name, source, threads, device=device, tf32=False
    )
    return runner


@dataclasses.dataclass
class Prepared:
    """What both engines share: the session, the selected images and the scores to fill."""

    config: EvalConfig
    session: Session
    #: the reference first, then the requested variants.
    variants: list[Variant]
    folder: ImageFolder
    selected: list[int]
    #: the evaluated indices (selected, sharded), ascending.
    indices: list[int]
    images: list[LabelledImage]
    scores: dict[str, VariantScore]
    #: the non-reference variants that apply here (the others are ``n/a``).
    names: list[str]

    @property
    def spec(self) -> PreprocessSpec:
        """The card's hashed preprocessing, NCHW: the bytes every runtime gets."""
        return self.session.card.preprocess.replace(layout="NCHW")

    def result(self, start: float) -> EvalResult:
        """The scores as an :class:`EvalResult` (the same schema whichever engine ran)."""
        config, card = self.config, self.session.card
        source, sha256 = self.session.reported_weights()
        dataset = {
            "root": str(config.data),
            "sha256": self.folder.sha256,
            "mapping": self.folder.mapping,
            "classes": self.folder.classes,
            "total": len(self.folder.images),
            "limit": config.limit,
            "selected": len(self.selected),
        }
        return EvalResult(
            model=card.name,
            weights={"source": source, "sha256": sha256},
            preprocess_sha256=card.preprocess.sha256,
            dataset=dataset,
            shard={"k": config.shard[0], "n": config.shard[1]} if config.shard else None,
            indices=list(self.indices),
            scores=[self.scores[v.name] for v in self.variants],
            seconds=time.perf_counter() - start,
        )


def open_session(config: EvalConfig, progress: Progress) -> tuple[Session, list[Variant]]:
    """The checked configuration's session and variants (the reference first)."""
    from parity.harness import RunConfig, Session
    from parity.lazy import installed
    from parity.variants import REFERENCE, VARIANTS, resolve_variants

    if config.batch_size < 1:
        raise ParityError(f"--batch-size {config.batch_size}: must be at least 1")
    if config.device not in DEVICES:
        raise ParityError(f"--device {config.device!r}: must be cpu, cuda or auto")
    variants = [VARIANTS[REFERENCE]] + [
        v for v in resolve_variants(config.runtimes) if not v.reference
    ]
    if not installed(variants[0].module):
        raise ParityError("parity eval compares with torch, which is not installed here")
    session = Session(
        RunConfig(
            model=config.model, runtimes=config.runtimes, weights=config.weights,
            threads=config.threads, rebuild=config.rebuild, jobs=config.jobs,
            timeout=config.timeout,
        ),
        progress,
    )  # fmt: skip
    return session, variants


def select(config: EvalConfig, session: Session, variants: list[Variant]) -> Prepared:
    """Scan the dataset (after the weights: a training source may write it) and select."""
    from parity.plan import plan
    from parity.weights import cached_class_names, class_names_path

    card = session.card
    names_path = class_names_path(card)
    if names_path is not None and not names_path.is_file():  # the torch worker caches them
        session.prefetch([], reference=True)
        session.release()
    folder = scan_image_folder(config.data, card.num_classes, cached_class_names(card))
    selected = select_indices(len(folder.images), config.limit)
    indices = shard_indices(selected, config.shard)
    if not indices:
        raise ParityError(
            f"shard {config.shard[0]}/{config.shard[1]} of {len(selected)} images is empty"
            if config.shard
            else f"{config.data}: no images selected"
        )
    scores = {v.name: VariantScore(v.name) for v in variants}
    planned = plan(card, variants[1:])
    for variant, reason in planned.not_applicable:
        scores[variant.name].not_applicable = reason
    names = [v.name for v in planned.applicable]
    images = [folder.images[i] for i in indices]
    return Prepared(config, session, variants, folder, selected, indices, images, scores, names)


def evaluate(
    config: EvalConfig,
    progress: Progress = lambda message: None,
    on_batch: OnBatch = lambda done, total: None,
) -> EvalResult:
    """Run torch and every requested variant over the (selected, sharded) dataset.

    The images are preprocessed once, here, into a memory-mapped ``images.npy``
    (``on_batch(done, total)`` as they are); each backend's worker runs its variants over
    it in chunks of ``batch_size`` (taps off) and hands back their logits. A variant that
    does not apply here is ``n/a`` with its reason; one whose export or runtime fails, or
    whose worker crashes or times out, is failed (its error in the result) and the others
    carry on. The reference failing fails every variant (no agreement without it: an error
    result, exit 1); bad input raises :class:`ParityError`.
    """
    from parity.prefetch import run_workers
    from parity.variants import REFERENCE

    start = time.perf_counter()
    session, variants = open_session(config, progress)
    # Weights first (in the torch worker): a training source may write the dataset.
    session.prefetch([])
    session.release()
    prepared = select(config, session, variants)
    images, indices, names = prepared.images, prepared.indices, prepared.names
    with tempfile.TemporaryDirectory(prefix="parity-eval-") as tmp:
        run_dir = Path(tmp)
        _preprocess(images, prepared.spec, run_dir / "images.npy", config.batch_size, on_batch)
        progress(
            f"evaluating {len(indices)} images with torch, {', '.join(names) or 'nothing else'}"
        )
        adjust = functools.partial(_evaluations, config.batch_size, config.device)
        outcomes, handed = run_workers(session, run_dir, names, reference=True, adjust=adjust)
        session.take_reference(handed)
        logits = {
            name: np.load(outcomes[name].folder / "logits.npy")
            for name in (REFERENCE, *names) if outcomes[name].error is None
        }  # fmt: skip
    labels = np.array([image.label for image in images])
    paths = [image.name for image in images]
    failed = outcomes[REFERENCE].error
    for name in (REFERENCE, *names):
        score = prepared.scores[name]
        score.error = outcomes[name].error
        if score.error is None and failed is not None:  # nothing to agree with
            score.error = f"the torch reference failed on the dataset: {failed}"
        score.seconds = float(outcomes[name].record.get("seconds", 0.0))
        if score.error is None:
            score_batch(score, indices, paths, labels, logits[REFERENCE], logits[name])
    return prepared.result(start)


def _preprocess(
    images: Sequence[LabelledImage],
    spec: PreprocessSpec,
    path: Path,
    chunk: int,
    on_batch: OnBatch,
) -> None:
    """The images through ``spec`` into one ``.npy``, ``chunk`` at a time (never all in memory)."""
    out: np.memmap[Any, Any] | None = None
    for first in range(0, len(images), chunk):
        batch = preprocess_batch([image.path for image in images[first : first + chunk]], spec)
        if out is None:
            shape = (len(images), *batch.shape[1:])
            out = np.lib.format.open_memmap(path, mode="w+", dtype=batch.dtype, shape=shape)
        out[first : first + len(batch)] = batch
        on_batch(first + len(batch), len(images))
    if out is not None:
        out.flush()


def _evaluations(batch_size: int, device: str, jobs: list[Job]) -> None:
    """The planned runs become evaluations over ``images.npy``; the reference's joins the
    torch job (after its exports)."""
    from parity.variants import REFERENCE

    task = {"kind": "eval", "batch_size": batch_size}
    for job in jobs:
        for each in job.tasks:
            if each["kind"] == "run":
                each.update(task)
        if job.reference:
            job.tasks.append({**task, "name": REFERENCE, "variant": REFERENCE, "device": device})
