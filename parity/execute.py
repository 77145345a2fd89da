"""The execute stage: a variant's runner on its artifact (or, for torch, the module) over
the fixture batch, every tap read (:func:`execute`); called in the worker that owns the
runtime (:mod:`parity.worker`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from parity.exported import Artifact
from parity.runner import Runner
from parity.taps import Tap
from parity.variants import Variant


@dataclasses.dataclass(frozen=True)
class Execution:
    """What one run gave: its taps on the batch, the precision it ran in (where its runtime
    says, ``Runner.executed``), and the tensor each tap was read from (``Runner.located``)."""

    outputs: Mapping[str, np.ndarray]
    executed: str | None
    located: Mapping[str, str]


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


def execute(
    variant: Variant,
    source: Artifact | Any,
    batch: np.ndarray,
    taps: Sequence[Tap],
    threads: int,
    entered: Callable[[], None] = lambda: None,
) -> Execution:
    """Run ``variant`` on ``source`` over ``batch``; ``entered`` is called once its runner
    is loaded, as the run begins (the worker's phase log)."""
    with make_runner(variant, source, threads) as runner:
        entered()
        outputs = runner.run(batch, taps)
    return Execution(outputs, runner.executed or None, dict(runner.located))
