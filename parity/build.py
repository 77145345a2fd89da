"""The build stage, in a worker process: the weights, the torch reference and the
artifacts of the model under test, from its :class:`~parity.context.ModelContext`.

Plain functions over the context: :mod:`parity.worker` calls them in the worker that owns
the framework (the torch worker loads the weights and runs the reference; each exporter
runs in its framework's worker), and :class:`parity.local.LocalSession` composes the same
ones in-process. The parent process never calls them (it imports no framework).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

import numpy as np

from parity.artifacts import ArtifactCache, BuildContext
from parity.backends import get_exporter
from parity.bundle import Bundle
from parity.context import ModelContext
from parity.execute import make_runner
from parity.exported import Artifact
from parity.reference import ReferenceCache, reference_key
from parity.runconfig import Progress
from parity.threads import REFERENCE_THREADS
from parity.variants import REFERENCE, VARIANTS
from parity.weights import HandedWeights, Weights, cached_weights_sha256, load_model

#: Loads (once) and returns the weights under test.
WeightsSource = Callable[[], Weights]


@dataclasses.dataclass(frozen=True)
class Reference:
    """The torch reference's taps on the batch; ``source``: ``"cached"`` (read from the
    reference cache, torch not run) or ``"computed"`` (run now, ``seconds`` long)."""

    taps: Mapping[str, np.ndarray]
    seconds: float
    source: str


def load_weights(
    context: ModelContext,
    handed: HandedWeights | None = None,
    progress: Progress = lambda message: None,
) -> Weights:
    """The weights under test: the file the torch worker ``handed`` over, else the torch
    module loaded here."""
    if handed is not None:
        return handed
    card = context.card
    progress(f"loading {card.name} weights ({context.config.weights or card.weights})")
    return load_model(card, context.config.weights)


def weights_sha256(
    context: ModelContext, weights: WeightsSource, handed: HandedWeights | None = None
) -> str:
    """The weights' hash: of those ``handed`` over, known to the parent or the weights
    cache, else of the weights loaded."""
    if handed is not None:
        return handed.sha256
    known = context.weights_sha256 or cached_weights_sha256(context.card, context.config.weights)
    return known if known is not None else weights().sha256


def weights_source(context: ModelContext) -> str:
    """Where the weights under test come from (the config's, else the card's)."""
    return context.config.weights or context.card.weights


def reference(
    context: ModelContext,
    weights: WeightsSource,
    batch: np.ndarray,
    handed: HandedWeights | None = None,
    progress: Progress = lambda message: None,
) -> Reference:
    """The torch outputs for every tap on ``batch``: from the reference cache, else run
    (and stored there); ``--rebuild`` recomputes them."""
    card, taps = context.card, context.taps
    key = reference_key(
        weights_sha256(context, weights, handed),
        context.batch_sha256,
        taps,
        card.preprocess.sha256,
    )
    cache = ReferenceCache()
    cached = None if context.config.rebuild else cache.load(card.name, key, taps)
    if cached is not None:
        return Reference(cached, 0.0, "cached")
    module = weights().module
    progress(f"running the torch reference on {len(batch)} images")
    threads = min(context.config.threads, REFERENCE_THREADS)
    with make_runner(VARIANTS[REFERENCE], module, threads) as runner:
        start = time.perf_counter()
        outputs = runner.run(batch, taps)
        seconds = time.perf_counter() - start
    cache.store(card.name, key, outputs)
    return Reference(outputs, seconds, "computed")


def build_context(
    context: ModelContext,
    weights: WeightsSource,
    cache: ArtifactCache,
    handed: HandedWeights | None = None,
    progress: Progress = lambda message: None,
) -> BuildContext:
    """What the exporters ask for (the card, the weights, upstream artifacts)."""
    return BuildContext(
        context.card, weights, cache, progress, lambda: weights_sha256(context, weights, handed)
    )


def artifact(build: BuildContext, exporter: str, bundle: Bundle | None = None) -> Artifact:
    """The artifact of ``exporter``: read from ``bundle``, else exported now (or read from
    the cache)."""
    if bundle is not None:
        card = build.card
        return bundle.artifact(bundle.model(card.name, card.preprocess.sha256), exporter)
    return build.cache.get(get_exporter(exporter), build)
