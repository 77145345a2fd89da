"""The in-process side of a :class:`~parity.session.Session`, for worker processes only.

A worker (:mod:`parity.worker`) imports its framework and computes here what the parent
process reads from it: the weights, the torch reference, an export, a variant's taps.
The parent's :class:`~parity.session.Session` never runs a framework; it asks the workers
(:mod:`parity.prefetch`). Tests and benchmarks that measure a runtime itself in their own
process use this class too, knowing they import the framework.
"""

from __future__ import annotations

import time

import numpy as np

from parity.backends import get_exporter
from parity.exported import Artifact
from parity.runconfig import make_runner
from parity.session import Session
from parity.threads import REFERENCE_THREADS
from parity.variants import REFERENCE, VARIANTS, Variant
from parity.weights import (
    HandedWeights,
    LoadedModel,
    Weights,
    cached_weights_sha256,
    load_model,
)


class LocalSession(Session):
    """A :class:`Session` that loads the weights, runs torch and the runtimes and exports
    artifacts in this process (a worker's, or a test's that means to)."""

    _model: LoadedModel | None = None

    def model(self) -> Weights:
        if self.handed is not None:
            return self.handed
        if self._model is None:
            self.progress(
                f"loading {self.card.name} weights ({self.config.weights or self.card.weights})"
            )
            self._model = load_model(self.card, self.config.weights)
        return self._model

    def receive(
        self,
        batch: np.ndarray,
        handed: HandedWeights | None = None,
        reference: dict[str, np.ndarray] | None = None,
    ) -> None:
        """What the parent computed, for a worker's session: the batch, the weights it
        handed over (a file), the reference taps."""
        self._batch, self.handed = batch, handed
        if reference is not None:
            self._reference = reference

    def local_weights_sha256(self) -> str:
        if self.handed is not None:
            return self.handed.sha256
        if self._model is None:
            known = cached_weights_sha256(self.card, self.config.weights)
            if known is not None:
                return known
        self._reference_ran()
        return self.model().sha256

    def _obtain_reference(self) -> dict[str, np.ndarray]:
        """Torch outputs for every tap on the fixture batch (from the reference cache if there)."""
        self._reference_ran()
        key = self._reference_key(self.local_weights_sha256())
        cached = self._cached_reference(key)
        if cached is not None:
            return cached
        module = self.model().module
        self.progress(f"running the torch reference on {len(self.fixtures)} images")
        threads = min(self.config.threads, REFERENCE_THREADS)
        with make_runner(VARIANTS[REFERENCE], module, threads) as runner:
            start = time.perf_counter()
            outputs = runner.run(self.batch, self.taps)
            self.reference_seconds = time.perf_counter() - start
        self.reference_source = "computed"
        self.references.store(self.card.name, key, outputs)
        return outputs

    def artifact(self, variant: Variant) -> Artifact:
        """The variant's artifact: from the bundle, or exported (cached) now."""
        assert variant.exporter is not None
        if self.bundle is not None and self.bundle_model is not None:
            return self.bundle.artifact(self.bundle_model, variant.exporter)
        return self.cache.get(get_exporter(variant.exporter), self.context)

    def outputs(self, variant: Variant) -> tuple[dict[str, np.ndarray], Artifact | None]:
        if variant.reference or variant.name in self._outputs or variant.name in self._failures:
            return super().outputs(variant)
        # A torch variant that is not the reference runs on (a copy of) the module.
        artifact = self.artifact(variant) if variant.exporter else None
        source = artifact or self.model().module
        self.progress(f"running {variant.name}")
        with make_runner(variant, source, self.config.threads) as runner:
            self._outputs[variant.name] = (runner.run(self.batch, self.taps), artifact)
        if runner.executed:
            self.executed[variant.name] = runner.executed
        self.located[variant.name] = runner.located
        return self._outputs[variant.name]
