"""An in-process model under test: a :class:`~parity.session.Session` whose weights,
reference, artifacts and runs are made here, by the same stage functions a worker calls
(:mod:`parity.build`, :mod:`parity.execute`).

The parent's :class:`~parity.session.Session` never runs a framework; it asks the workers
(:mod:`parity.prefetch`). This façade is for code that judges in the process that runs the
framework: a worker's doctor and external-file tasks (:meth:`LocalSession.of`), and the
tests and benchmarks that measure a runtime in their own process, knowing they import it.
"""

from __future__ import annotations

import functools

import numpy as np

from parity.build import artifact, load_weights, reference, weights_sha256
from parity.context import ModelContext
from parity.execute import execute
from parity.exported import Artifact
from parity.preprocess import tensor_sha256
from parity.session import Session
from parity.variants import Variant
from parity.weights import HandedWeights, Weights


class LocalSession(Session):
    """A :class:`Session` that loads the weights, runs torch and the runtimes and exports
    artifacts in this process (a worker's, or a test's that means to)."""

    _model: Weights | None = None

    @classmethod
    def of(
        cls, context: ModelContext, batch: np.ndarray, handed: HandedWeights | None
    ) -> LocalSession:
        """A worker's model under test: the context's config, the parent's batch, the
        weights handed over and the reference the torch worker wrote (when it has)."""
        session = cls(context.config)
        session.receive(batch, handed, context.reference())
        return session

    def receive(
        self,
        batch: np.ndarray,
        handed: HandedWeights | None = None,
        reference: dict[str, np.ndarray] | None = None,
    ) -> None:
        """What the parent computed: the batch, the weights handed over, the reference."""
        self._batch, self.handed = batch, handed
        if reference is not None:
            self._reference = reference

    @functools.cached_property
    def model_context(self) -> ModelContext:
        """This model as the stage functions take it (no run directory: held here)."""
        return ModelContext(self.config, None, tensor_sha256(self.batch))

    def model(self) -> Weights:
        if self.handed is not None:
            return self.handed
        if self._model is None:
            self._model = load_weights(self.model_context, None, self.progress)
        return self._model

    def local_weights_sha256(self) -> str:
        self._reference_ran()
        return weights_sha256(self.model_context, self.model, self.handed)

    def _obtain_reference(self) -> dict[str, np.ndarray]:
        self._reference_ran()
        ran = reference(self.model_context, self.model, self.batch, self.handed, self.progress)
        self.reference_seconds, self.reference_source = ran.seconds, ran.source
        return dict(ran.taps)

    def artifact(self, variant: Variant) -> Artifact:
        """The variant's artifact: from the bundle, or exported (cached) now."""
        assert variant.exporter is not None
        return artifact(self.context, variant.exporter, self.bundle)

    def outputs(self, variant: Variant) -> tuple[dict[str, np.ndarray], Artifact | None]:
        if variant.reference or variant.name in self._outputs or variant.name in self._failures:
            return super().outputs(variant)
        # A torch variant that is not the reference runs on (a copy of) the module.
        made = self.artifact(variant) if variant.exporter else None
        self.progress(f"running {variant.name}")
        ran = execute(variant, made or self.model().module, self.batch, self.taps,
                      self.config.threads)  # fmt: skip
        self._outputs[variant.name] = (dict(ran.outputs), made)
        if ran.executed:
            self.executed[variant.name] = ran.executed
        self.located[variant.name] = dict(ran.located)
        return self._outputs[variant.name]
