"""One model under test: its card, weights, fixtures, reference and artifacts, and the
judging of each variant's outputs against torch now or the stored goldens.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity.artifacts import Artifact, ArtifactCache, BuildContext
from parity.backends import get_exporter
from parity.batchcache import cached_batch
from parity.bundle import Bundle
from parity.compare import (
    ReferenceTap,
    prepare_reference,
)
from parity.errors import RuntimeFailure
from parity.fixtures import Fixture, load_fixtures
from parity.golden import (
    GoldenMoves,
    GoldenStore,
    StaleGoldenError,
    golden_moves,
)
from parity.judge import golden, live
from parity.lazy import installed, package_version
from parity.paths import find_project
from parity.prefetch import Fetched, ReferenceRun, fetch, run_workers
from parity.preprocess import tensor_sha256
from parity.reference import ReferenceCache, reference_key
from parity.result import (
    ParityReport,
    VariantResult,
)
from parity.runconfig import Progress, RunConfig, default_tolerances
from parity.scratch import owned_folder, remove_owned
from parity.taps import select_taps
from parity.tolerances import TolerancePolicy
from parity.variants import REFERENCE, VARIANTS, Variant
from parity.weights import HandedWeights, Weights, cached_weights_sha256
from parity.zoo import get_card


def golden_versions() -> dict[str, str]:
    """Package versions recorded in golden provenance."""
    return {p: package_version(p) for p in ("torch", "torchvision", "numpy", "pillow")}


class Session:
    """Shared state of one model under test: card, weights, fixtures, reference, cache.

    Each piece is computed on first use and kept, so a pytest session or a benchmark can
    check many variants without reloading weights or re-running the reference. This
    process imports no framework: the weights, the reference, exports and runs come from
    worker processes (:meth:`prefetch`, or :meth:`need` for what was not prefetched);
    :class:`parity.local.LocalSession` is the in-process side a worker uses.
    """

    def __init__(self, config: RunConfig, progress: Progress = lambda message: None) -> None:
        self.config = config
        self.progress = progress
        self.card = get_card(config.model)
        self.taps = select_taps(self.card.taps, config.taps)
        self.policy = TolerancePolicy.load(config.tolerances or default_tolerances())
        self.cache = ArtifactCache(config.cache_root, rebuild=config.rebuild)
        self.context = BuildContext(
            self.card, self.model, self.cache, progress, self.local_weights_sha256
        )
        self.references = ReferenceCache()
        self.bundle = Bundle(config.bundle) if config.bundle is not None else None
        self.bundle_model = (
            self.bundle.model(self.card.name, self.card.preprocess.sha256) if self.bundle else None
        )
        self.reference_seconds = 0.0
        #: "cached" (read from the reference cache, no torch) or "computed" (torch ran now).
        self.reference_source = ""
        #: Weights loaded by the torch worker (set in workers and after :meth:`prefetch`).
        self.handed: HandedWeights | None = None
        self._cached_weights_sha256: str | None = None
        self._outputs: dict[str, tuple[dict[str, np.ndarray], Artifact | None]] = {}
        #: Variants whose worker failed on them (message), from :meth:`prefetch`.
        self._failures: dict[str, tuple[str, Artifact | None]] = {}
        #: Seconds each prefetched variant took in its worker (artifact, load and run).
        self.worker_seconds: dict[str, float] = {}
        #: The precision each variant ran in, where its runtime says (``Runner.executed``).
        self.executed: dict[str, str] = {}
        #: Tap -> tensor name per variant, where its runner says (``Runner.located``).
        self.located: dict[str, dict[str, str]] = {}
        #: Why the torch worker could not produce the reference (live checks then fail).
        self.reference_failure: str | None = None
        #: The results of the file made elsewhere (live, then golden), when a worker checked it.
        self.external: list[VariantResult] = []
        self._release: weakref.finalize[Any, Any] | None = None
        self._batch: np.ndarray | None = None
        self._reference: dict[str, np.ndarray] | None = None
        #: When set (the pytest plugin), called with a variant before its outputs or the
        #: reference are needed here; it runs them in workers (:meth:`prefetch`), so this
        #: process imports no framework.
        self.fetch: Callable[[Variant], None] | None = None

    @functools.cached_property
    def fixtures(self) -> list[Fixture]:
        return load_fixtures(self.config.fixtures or find_project().fixtures)

    @property
    def batch(self) -> np.ndarray:
        """The fixtures through the card's spec: float32 NCHW, identical for every runtime."""
        if self._batch is None:
            spec = self.card.preprocess.replace(layout="NCHW")
            self._batch = cached_batch(self.fixtures, spec)
        return self._batch

    def model(self) -> Weights:
        """The weights under test, handed over by the torch worker (never loaded here)."""
        if self.handed is None or not self.handed.state_dict_path.is_file():
            self.prefetch([], reference=True, state_dict=True)
        if self.handed is None:
            self._reference_ran()
            raise RuntimeError("the torch worker handed no weights (a bug in parity)")
        return self.handed

    def local_weights_sha256(self) -> str:
        """The sha256 of the weights here: read without torch when cached, else from the
        torch worker."""
        if self.handed is not None:
            return self.handed.sha256
        if self._cached_weights_sha256 is None:  # once known, kept (~15 ms a read)
            self._cached_weights_sha256 = cached_weights_sha256(self.card, self.config.weights)
        if self._cached_weights_sha256 is not None:
            return self._cached_weights_sha256
        self.need(VARIANTS[REFERENCE])
        if self.handed is None:
            self._reference_ran()
            raise RuntimeError("the torch worker handed no weights (a bug in parity)")
        return self.handed.sha256

    def need(self, variant: Variant) -> None:
        """Run what this process lacks of ``variant`` (its outputs, its artifact; for the
        reference: the reference taps and the weights) in worker processes: the
        :attr:`fetch` hook when set (the plugin batches variants), else a prefetch of
        ``variant`` alone. Nothing runs in this process."""
        if self.fetch is not None:
            self.fetch(variant)
        else:
            self.prefetch([] if variant.reference else [variant])

    def _reference_ran(self) -> None:
        """Raise :class:`RuntimeFailure` when the torch worker died before the reference."""
        if self.reference_failure is not None and self.handed is None:
            raise RuntimeFailure(self.reference_failure)

    @property
    def reference(self) -> dict[str, np.ndarray]:
        """Torch outputs for every tap on the fixture batch, obtained once."""
        if self._reference is None:
            self._reference = self._obtain_reference()
        return self._reference

    def _obtain_reference(self) -> dict[str, np.ndarray]:
        """The reference from the reference cache, or run in the torch worker."""
        self._reference_ran()
        cached = self.known_reference()
        if cached is not None:
            return cached
        self.need(VARIANTS[REFERENCE])  # the worker run hands it over (take_reference)
        if self._reference is not None:
            return self._reference
        self._reference_ran()
        raise RuntimeError("the torch worker returned no reference (a bug in parity)")

    def known_reference(self) -> dict[str, np.ndarray] | None:
        """The reference when held or in the reference cache (no torch), else ``None``."""
        if self._reference is None:
            known = self.handed.sha256 if self.handed else None
            known = known or cached_weights_sha256(self.card, self.config.weights)
            if known is not None:
                self._reference = self._cached_reference(self._reference_key(known))
        return self._reference

    def take_reference(self, run: ReferenceRun | None) -> None:
        """What the torch worker gave back: the weights and the reference (stored in the
        reference cache when computed now), or why it could not (``None``: it did not run)."""
        if run is None:
            return
        self.reference_failure = run.failure
        if run.failure is not None or run.handed is None:
            return
        self.handed, self._reference = run.handed, dict(run.taps)
        self.reference_seconds, self.reference_source = run.seconds, run.source
        if run.source == "computed":
            key = self._reference_key(run.handed.sha256)
            self.references.store(self.card.name, key, self._reference)

    def _reference_key(self, weights_sha256: str) -> str:
        return reference_key(
            weights_sha256, tensor_sha256(self.batch), self.taps, self.card.preprocess.sha256
        )

    def _cached_reference(self, key: str) -> dict[str, np.ndarray] | None:
        """The reference from the reference cache (``--rebuild`` recomputes it)."""
        cached = (
            None if self.config.rebuild else self.references.load(self.card.name, key, self.taps)
        )
        if cached is not None:
            self.reference_source = "cached"
        return cached

    @functools.cached_property
    def prepared_reference(self) -> dict[str, ReferenceTap]:
        """The reference's per-tap statistics, computed once for every live comparison."""
        return prepare_reference(self.reference, self.taps)

    def artifact(self, variant: Variant) -> Artifact:
        """The variant's artifact: from the bundle, or from the cache once a worker made it."""
        assert variant.exporter is not None
        if self.bundle is not None and self.bundle_model is not None:
            return self.bundle.artifact(self.bundle_model, variant.exporter)
        exporter = get_exporter(variant.exporter)
        if not self.cache.is_cached(exporter, self.context):
            self.build([variant])
        if not self.cache.is_cached(exporter, self.context):
            raise RuntimeError(f"no worker exported {exporter.name} (a bug in parity)")
        return self.cache.get(exporter, self.context)

    def build(self, variants: Sequence[Variant]) -> None:
        """Export the artifacts of ``variants`` in the workers of their frameworks (not run).

        A failed export raises :class:`RuntimeFailure` naming it.
        """
        names = [v.name for v in variants if v.exporter is not None]
        run_dir = owned_folder("parity-build-")
        try:
            outcomes, handed = run_workers(self, run_dir, names, run=False)
            self.take_reference(handed)
        finally:
            remove_owned(run_dir)
        self.cache.rebuild = False  # the workers rebuilt what --rebuild asked for
        for name, outcome in sorted(outcomes.items()):
            if name.startswith("export-") and outcome.error is not None:
                raise RuntimeFailure(f"{name.removeprefix('export-')}: {outcome.error}")

    def weights(self) -> tuple[str, str]:
        """(source, sha256) of the weights under test, without torch in bundle mode."""
        if self.bundle_model is not None:
            return self.bundle_model.weights_source, self.bundle_model.weights_sha256
        return self.config.weights or self.card.weights, self.local_weights_sha256()

    def reported_weights(self) -> tuple[str, str]:
        """:meth:`weights` for a report: no sha256 when the torch worker died before it."""
        try:
            return self.weights()
        except RuntimeFailure:
            return self.config.weights or self.card.weights, ""

    def outputs(self, variant: Variant) -> tuple[dict[str, np.ndarray], Artifact | None]:
        """A variant's outputs and taps on the fixture batch, run once per session.

        The torch variant returns the reference itself. Exceptions from the runtime
        propagate; :meth:`check` and :meth:`check_golden` turn them into failed results.
        """
        if variant.reference:
            local = self.local_weights_sha256()
            if self.bundle_model is not None and local != self.weights()[1]:
                raise StaleGoldenError(
                    f"{self.config.bundle}: the bundle was built from weights "
                    f"{self.weights()[1][:12]}, torch here has {local[:12]}; "
                    "rebuild the bundle (tox -e build)"
                )
            return self.reference, None
        if variant.name not in self._outputs and variant.name not in self._failures:
            self.need(variant)
        if variant.name in self._failures:
            message, artifact = self._failures[variant.name]
            raise RuntimeFailure(message, artifact)
        if variant.name not in self._outputs:
            raise RuntimeError(f"no worker ran {variant.name} (a bug in parity)")
        return self._outputs[variant.name]

    def prefetch(
        self,
        variants: Sequence[Variant],
        external: dict[str, Any] | None = None,
        reference: bool = False,
        state_dict: bool = False,
        on_outputs: Callable[[str, Mapping[str, np.ndarray]], None] | None = None,
    ) -> None:
        """Run the reference and ``variants`` (and a file made elsewhere) in worker
        processes and take what they give back (:func:`parity.prefetch.fetch`; it calls
        ``on_outputs`` with each variant's taps as they arrive).

        A cached reference's statistics are computed meanwhile, in a thread of this
        process, which otherwise only waits for the workers (numpy releases the GIL)."""
        prepare = None
        if variants and self.known_reference() is not None:
            prepare = threading.Thread(target=self._prepare_reference, daemon=True)
            prepare.start()
        try:
            self.take(fetch(self, variants, external, reference, state_dict, on_outputs))
        finally:
            if prepare is not None:
                prepare.join()

    def _prepare_reference(self) -> None:
        with contextlib.suppress(Exception):  # raised again where the statistics are used
            self.prepared_reference  # noqa: B018 - computed for later

    def take(self, fetched: Fetched) -> None:
        """Hold a prefetch's outcomes; its run directory goes with this session."""
        self.take_reference(fetched.reference)
        self._release = weakref.finalize(self, remove_owned, fetched.run_dir)
        self.worker_seconds.update(fetched.seconds)
        self.executed.update(fetched.executed)
        self.located.update({n: dict(taps) for n, taps in fetched.located.items()})
        self._failures.update(fetched.failures)
        self._outputs.update({n: (dict(o), a) for n, (o, a) in fetched.outputs.items()})
        if fetched.external is not None:
            self.external = list(fetched.external)

    def has_run(self, name: str) -> bool:
        """Whether this session holds the outputs of variant ``name``."""
        return name in self._outputs

    def forget(self, variant: Variant) -> None:
        """Drop a judged variant's outputs (memory-mapped taps: their pages go with them).

        For a caller done with the variant: :meth:`outputs` would run it again, in a worker.
        """
        self._outputs.pop(variant.name, None)

    def release(self) -> None:
        """Remove the workers' run directory once judged (mapped taps stay readable)."""
        if self._release is not None:
            self._release()

    def check(self, variant: Variant) -> VariantResult:
        """Live check: one variant vs the torch reference now (:func:`parity.judge.live`)."""
        return live(self, variant)

    def check_golden(self, variant: Variant) -> VariantResult:
        """Regression check: one variant vs the stored goldens (:func:`parity.judge.golden`)."""
        return golden(self, variant)

    @functools.cached_property
    def goldens(self) -> GoldenStore:
        """This model's golden store, checked fresh against the current spec and inputs."""
        store = self.golden_store()
        store.check_fresh(
            self.fixtures,
            self.batch,
            self.card.preprocess,
            lambda: self.weights()[1] if self.bundle or installed("torch") else None,
            self.taps,
        )
        return store

    @property
    def goldens_folder(self) -> Path:
        return self.golden_store().folder

    def golden_store(self, writing: bool = False) -> GoldenStore:
        """The goldens read (the project's, else the bundled ones) or written (the project's
        only: the installed package is read-only, see :meth:`GoldenStore.write`)."""
        project = find_project()
        root = self.config.goldens or (
            self.bundle.goldens
            if self.bundle
            else project.goldens
            if writing
            else project.goldens_root(self.card.name)
        )
        return GoldenStore(root, self.card.name)

    def golden_moves(self) -> GoldenMoves:
        """What rewriting the goldens from torch now would change, and by how much."""
        return golden_moves(
            self.golden_store(), self.fixtures, self.batch, self.reference, self.taps,
            weights_sha256=self.local_weights_sha256(), spec=self.card.preprocess,
            versions=golden_versions(),
        )  # fmt: skip

    def report(self, results: list[VariantResult], started: float) -> ParityReport:
        """The report of this session's results (``started``: ``time.perf_counter()``)."""
        weights_source, weights_sha256 = self.reported_weights()
        return ParityReport(
            card=self.card,
            weights_source=weights_source,
            weights_sha256=weights_sha256,
            input_sha256=tensor_sha256(self.batch),
            fixtures=self.fixtures,
            taps=self.taps,
            tolerances=_relative(self.policy.source),
            results=results,
            reference_seconds=self.reference_seconds,
            reference_source=self.reference_source,
            wall_seconds=time.perf_counter() - started,
            strict=self.config.strict,
            config=find_project().config_label,
            measured_budgets=self.policy.measured_for(self.card.name),
        )

    def write_goldens(self) -> None:
        """(Re)write this model's goldens from the torch reference."""
        source, sha256 = self.weights()
        store = self.golden_store(writing=True)
        store.write(
            self.fixtures, self.batch, self.reference, self.taps,
            weights_source=source, weights_sha256=sha256,
            spec=self.card.preprocess, versions=golden_versions(),
        )  # fmt: skip
        self.__dict__.pop("goldens", None)


def _relative(path: str) -> str:
    """``path`` relative to the working directory when it is inside it (for reports)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path
