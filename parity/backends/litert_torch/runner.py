"""LiteRT on a litert-torch file: taps are the tensors its exporter located (by index)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity.backends.litert.runner import LiteRTRunner
from parity.errors import TapError
from parity.preprocess import Layout, to_layout
from parity.taps import Tap


class LiteRTTorchRunner(LiteRTRunner):
    """:class:`LiteRTRunner` (XNNPACK on/off, int8 I/O, batching) with located taps.

    Args:
        tap_tensors: tap name -> tensor index in the file (:mod:`.locate`).
        tap_layouts: tap name -> the layout its tensor has (``None``: not 4-D).
        tap_shapes: tap name -> its per-image shape, for tensors that have it without the
            axes of size 1 (torch's pooled (512, 1, 1) as the file's (512,)).
        unlocated: tap name -> why it could not be located (asking for it is a TapError).
        input_layout: the file's input layout (litert-torch keeps torch's NCHW).
    """

    input_layout: Layout = "NCHW"
    tap_layout: Layout = "NCHW"  # each tap is converted by its own recorded layout

    def __init__(
        self,
        name: str,
        path: Path | str,
        tap_tensors: Mapping[str, int] | None = None,
        tap_layouts: Mapping[str, Layout | None] | None = None,
        tap_shapes: Mapping[str, Sequence[int]] | None = None,
        unlocated: Mapping[str, str] | None = None,
        input_layout: Layout = "NCHW",
        threads: int = 2,
        xnnpack: bool = True,
    ) -> None:
        super().__init__(name, path, threads=threads, xnnpack=xnnpack)
        self.tap_tensors = dict(tap_tensors or {})
        self.tap_layouts = dict(tap_layouts or {})
        self.tap_shapes = {tap: tuple(shape) for tap, shape in (tap_shapes or {}).items()}
        self.unlocated = dict(unlocated or {})
        self.input_layout = input_layout

    def _tap_tensors(self, interpreter: Any, taps: Sequence[Tap]) -> dict[str, int]:
        if not self._details:
            self._details = {d["index"]: d for d in interpreter.get_tensor_details()}
        located = {}
        for tap in taps:
            if tap.name not in self.tap_tensors:
                why = self.unlocated.get(tap.name, "not a tap of the card it was exported for")
                raise TapError(f"{self.name}: tap '{tap.name}' not located in {self.path}: {why}")
            located[tap.name] = int(self.tap_tensors[tap.name])
        return located

    def _run(self, feed: np.ndarray, taps: Sequence[Tap]) -> dict[str, np.ndarray]:
        outputs = super()._run(feed, taps)
        for tap in taps:
            layout = self.tap_layouts.get(tap.name)
            if layout is not None:
                outputs[tap.name] = to_layout(outputs[tap.name], layout, "NCHW")
            if tap.name in self.tap_shapes:
                outputs[tap.name] = outputs[tap.name].reshape(len(feed), *self.tap_shapes[tap.name])
        return outputs
