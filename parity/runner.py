"""The Runner interface every runtime implements.

Modelled on Polygraphy's runners: construction is cheap, :meth:`Runner.activate` (or
``with runner:``) loads the framework and the artifact, :meth:`Runner.run` is a template
method that checks its input, calls the subclass's ``_run`` and checks what comes back.

Runners take the canonical batch (float32 NCHW, from :mod:`parity.preprocess`) and
return every tensor in the reference layout: a runner declares the layout of its input
and of its taps, and the base class transposes by that declaration, never by guessing
from shapes.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Self

import numpy as np

from parity.preprocess import Layout, to_layout
from parity.taps import Tap

#: Key of the final model output in every result.
OUTPUT = "output"


class Runner(abc.ABC):
    """Runs one artifact in one runtime and returns the requested taps.

    Subclasses set :attr:`input_layout` and :attr:`tap_layout` and implement
    :meth:`_activate`, :meth:`_run` and optionally :meth:`_deactivate`.
    """

    #: Layout the runtime wants its input in.
    input_layout: Layout = "NCHW"
    #: Layout of the 4-D tensors the runtime returns.
    tap_layout: Layout = "NCHW"

    def __init__(self, name: str) -> None:
        self.name = name
        self.active = False
        #: Wall time of the last :meth:`run`, seconds.
        self.last_inference_time = 0.0
        #: The precision it actually ran in, where the runtime says (``None``: not reported).
        self.executed: str | None = None
        #: Tap -> the name of the tensor it was read from in the artifact, where the runner
        #: knows (the report records it; Model Explorer overlays are keyed by it).
        self.located: dict[str, str] = {}

    def __enter__(self) -> Self:
        self.activate()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.deactivate()

    def activate(self) -> None:
        """Import the framework and open the artifact (idempotent)."""
        if not self.active:
            self._activate()
            self.active = True

    def deactivate(self) -> None:
        """Release the session/interpreter."""
        if self.active:
            self._deactivate()
            self.active = False

    def run(self, batch: np.ndarray, taps: Sequence[Tap] = ()) -> dict[str, np.ndarray]:
        """Run a canonical NCHW float32 batch; return ``{OUTPUT: ..., tap.name: ...}``.

        Every returned tensor is in the reference (NCHW) layout.
        """
        if not self.active:
            raise RuntimeError(f"runner {self.name} is not active; use 'with runner:'")
        if batch.ndim != 4 or batch.dtype != np.float32:
            raise ValueError(f"expected a float32 NCHW batch, got {batch.dtype} {batch.shape}")
        feed = to_layout(batch, "NCHW", self.input_layout)
        start = time.perf_counter()
        outputs = self._run(feed, taps)
        self.last_inference_time = time.perf_counter() - start
        missing = [t.name for t in taps if t.name not in outputs]
        if OUTPUT not in outputs or missing:
            raise RuntimeError(f"runner {self.name} returned no tensor for {missing or [OUTPUT]}")
        return {key: to_layout(value, self.tap_layout, "NCHW") for key, value in outputs.items()}

    @abc.abstractmethod
    def _activate(self) -> None:
        """Load the framework and the artifact."""

    def _deactivate(self) -> None:  # noqa: B027 - optional hook
        """Free resources (default: nothing to do)."""

    @abc.abstractmethod
    def _run(self, feed: np.ndarray, taps: Sequence[Tap]) -> dict[str, np.ndarray]:
        """Run ``feed`` (in :attr:`input_layout`); return the output and taps natively."""
