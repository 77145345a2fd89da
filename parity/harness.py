"""The live parity check: fixtures -> reference -> artifacts -> runners -> verdicts.

This is the one orchestration used by the CLI, the pytest plugin and the benchmark.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity.artifacts import Artifact, ArtifactCache, BuildContext
from parity.compare import TolerancePolicy, VariantVerdict, compare_taps
from parity.errors import ParityError
from parity.export import get_exporter
from parity.fixtures import Fixture, load_fixtures
from parity.paths import fixtures_dir
from parity.preprocess import preprocess_batch, tensor_sha256
from parity.runtimes.base import Runner
from parity.taps import Tap, select_taps
from parity.variants import REFERENCE, VARIANTS, Variant, resolve_variants
from parity.weights import LoadedModel, load_model
from parity.zoo import ModelCard, get_card

Progress = Callable[[str], None]

DEFAULT_MODEL = "mobilenet_v2"


def default_tolerances() -> Path:
    return fixtures_dir() / "tolerances.toml"


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """What to check. ``None`` means the default for every field."""

    model: str = DEFAULT_MODEL
    runtimes: Sequence[str] | None = None
    fixtures: Path | None = None
    weights: str | None = None
    tolerances: Path | None = None
    taps: Sequence[str] | None = None
    threads: int = 2
    rebuild: bool = False
    cache_root: Path | None = None


@dataclasses.dataclass
class VariantResult:
    """One variant's outcome: its verdict, or the error that stopped it."""

    variant: Variant
    verdict: VariantVerdict | None
    artifact: Artifact | None
    seconds: float
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.error is None and self.verdict is not None and self.verdict.passed


@dataclasses.dataclass
class ParityReport:
    """Everything a report shows about one model's run."""

    card: ModelCard
    weights_source: str
    weights_sha256: str
    input_sha256: str
    fixtures: list[Fixture]
    taps: tuple[Tap, ...]
    tolerances: str
    results: list[VariantResult]
    reference_seconds: float
    wall_seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def image_names(self) -> list[str]:
        return [f.name for f in self.fixtures]


def make_runner(variant: Variant, source: Artifact | Any, threads: int) -> Runner:
    """Instantiate a variant's runner on an artifact (or, for torch, a module).

    The runner gets the variant's options plus the ``runner_options`` the exporter
    recorded in the artifact's metadata (e.g. the Keras tap -> layer map).
    """
    options = dict(variant.options)
    if isinstance(source, Artifact):
        options.update(source.metadata.get("runner_options", {}))
        source = source.path
    runner: Runner = variant.runner_class()(variant.name, source, threads=threads, **options)
    return runner


class Session:
    """Shared state of one model under test: card, weights, fixtures, reference, cache.

    Each piece is computed on first use and kept, so a pytest session or a benchmark can
    check many variants without reloading weights or re-running the reference.
    """

    def __init__(self, config: RunConfig, progress: Progress = lambda message: None) -> None:
        self.config = config
        self.progress = progress
        self.card = get_card(config.model)
        self.taps = select_taps(self.card.taps, config.taps)
        self.policy = TolerancePolicy.load(config.tolerances or default_tolerances())
        self.cache = ArtifactCache(config.cache_root, rebuild=config.rebuild)
        self.context = BuildContext(self.card, self.model, self.cache, progress)
        self.reference_seconds = 0.0
        self._model: LoadedModel | None = None

    @functools.cached_property
    def fixtures(self) -> list[Fixture]:
        return load_fixtures(self.config.fixtures or fixtures_dir())

    @functools.cached_property
    def batch(self) -> np.ndarray:
        """The fixtures through the card's spec: float32 NCHW, identical for every runtime."""
        return preprocess_batch(
            [f.path for f in self.fixtures], self.card.preprocess.replace(layout="NCHW")
        )

    def model(self) -> LoadedModel:
        if self._model is None:
            self.progress(
                f"loading {self.card.name} weights ({self.config.weights or self.card.weights})"
            )
            self._model = load_model(self.card, self.config.weights)
        return self._model

    @functools.cached_property
    def reference(self) -> dict[str, np.ndarray]:
        """Torch outputs for every tap on the fixture batch."""
        module = self.model().module
        self.progress(f"running the torch reference on {len(self.fixtures)} images")
        with make_runner(VARIANTS[REFERENCE], module, self.config.threads) as runner:
            start = time.perf_counter()
            outputs = runner.run(self.batch, self.taps)
            self.reference_seconds = time.perf_counter() - start
        return outputs

    def artifact(self, variant: Variant) -> Artifact:
        assert variant.exporter is not None
        return self.cache.get(get_exporter(variant.exporter), self.context)

    def check(self, variant: Variant) -> VariantResult:
        """Run one variant on the fixtures and judge every tap against the reference."""
        reference = self.reference
        start = time.perf_counter()
        artifact = self.artifact(variant)
        self.progress(f"running {variant.name}")
        try:
            with make_runner(variant, artifact, self.config.threads) as runner:
                obtained = runner.run(self.batch, self.taps)
        except ParityError:
            raise
        except Exception as exc:  # a runtime failing on its artifact is a failed check
            return VariantResult(
                variant, None, artifact, time.perf_counter() - start, f"{type(exc).__name__}: {exc}"
            )
        verdict = compare_taps(
            self.card.name, variant.name, self.taps, reference, obtained, self.policy
        )
        return VariantResult(variant, verdict, artifact, time.perf_counter() - start)


def run_parity(config: RunConfig, progress: Progress = lambda message: None) -> ParityReport:
    """Check every requested variant of one model against the torch reference."""
    start = time.perf_counter()
    variants = [v for v in resolve_variants(config.runtimes) if v.family != REFERENCE]
    if not variants:
        raise ParityError(
            "no runtime to compare against the torch reference; pick one with --runtime"
        )
    session = Session(config, progress)
    _ = session.batch  # bad fixtures fail before any export
    results = [session.check(variant) for variant in variants]
    loaded = session.model()
    return ParityReport(
        card=session.card,
        weights_source=loaded.source,
        weights_sha256=loaded.sha256,
        input_sha256=tensor_sha256(session.batch),
        fixtures=session.fixtures,
        taps=session.taps,
        tolerances=session.policy.source,
        results=results,
        reference_seconds=session.reference_seconds,
        wall_seconds=time.perf_counter() - start,
    )
