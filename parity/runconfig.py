"""What a check is asked to do (:class:`RunConfig`: the context that crosses to the worker
processes, as a dict), and how a variant's runner is made from its artifact.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from parity.exported import Artifact
from parity.paths import find_project
from parity.runner import Runner
from parity.variants import Variant
from parity.workers import DEFAULT_TIMEOUT
from parity.zoo import DEFAULT_MODEL

Progress = Callable[[str], None]


def default_tolerances() -> Path:
    """The project's tolerance file (default: the bundled one)."""
    return find_project().tolerances


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
    goldens: Path | None = None
    #: Read artifacts and goldens from this bundle instead of exporting (no torch/TF needed).
    bundle: Path | None = None
    #: Also check a file made elsewhere (parity.external): path, runtime, tap map, layout.
    artifact: Path | None = None
    artifact_runtime: str | None = None
    tap_map: Path | None = None
    input_layout: str | None = None
    #: A variant that does not apply (``n/a``) fails the run.
    strict: bool = False
    #: Backends run side by side in worker processes (``None``: one per core; 1: one at
    #: a time). ``run_parity`` always runs them in workers.
    jobs: int | None = None
    #: Seconds one task (an export, a variant's run) may take before its worker is killed.
    timeout: float = DEFAULT_TIMEOUT


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
