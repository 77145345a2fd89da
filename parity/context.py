"""The model under test as a worker process gets it: :class:`ModelContext`, a frozen value
that crosses the process boundary as a dict (the parent's :mod:`parity.prefetch` writes
it into each job; :mod:`parity.worker` reads it back), not a session.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import numpy as np

from parity.preprocess import tensor_sha256
from parity.runconfig import RunConfig
from parity.runfiles import REFERENCE_TASK, load_arrays
from parity.taps import Tap, select_taps
from parity.weights import HandedWeights
from parity.zoo import ModelCard, get_card

#: The run directory's files the context names.
BATCH = "batch.npy"
WEIGHTS = "weights.json"
STATE_DICT = "state_dict.npz"
REFERENCE = REFERENCE_TASK


@dataclasses.dataclass(frozen=True)
class ModelContext:
    """What a worker needs to build and run the model under test.

    Attributes:
        config: the check asked for (``threads``: each worker's share of the cores).
        run_dir: the run directory: :data:`BATCH` (the fixtures through the card's spec,
            written by the parent) and, once the torch worker ran, the weights it hands
            over (:meth:`handed`) and the reference taps (:data:`REFERENCE`); ``None`` for
            an in-process model (:class:`parity.local.LocalSession`, which holds them).
        batch_sha256: the batch's hash (part of the reference's cache key).
        weights_sha256: the weights' hash when the parent knows it without torch (the
            weights cache), else ``None``.
    """

    config: RunConfig
    run_dir: Path | None
    batch_sha256: str
    weights_sha256: str | None = None

    @classmethod
    def write(
        cls,
        run_dir: Path,
        config: RunConfig,
        batch: np.ndarray,
        weights_sha256: str | None = None,
    ) -> ModelContext:
        """The parent's side: ``batch`` written into ``run_dir``, and its context."""
        np.save(run_dir / BATCH, batch)
        return cls(config, run_dir, tensor_sha256(batch), weights_sha256)

    @functools.cached_property
    def card(self) -> ModelCard:
        return get_card(self.config.model)

    @functools.cached_property
    def taps(self) -> tuple[Tap, ...]:
        """The taps checked (the card's, or the config's selection), in forward order."""
        return select_taps(self.card.taps, self.config.taps)

    def _files(self) -> Path:
        if self.run_dir is None:
            raise RuntimeError("an in-process model context has no run directory (a bug)")
        return self.run_dir

    def batch(self) -> np.ndarray:
        """The fixture batch: float32 NCHW, identical for every runtime."""
        return np.load(self._files() / BATCH)

    def reference(self) -> dict[str, np.ndarray] | None:
        """The reference taps the torch worker wrote, once it has (read into memory)."""
        folder = self._files() / REFERENCE
        return load_arrays(folder, mmap=False) if folder.is_dir() else None

    def handed(self) -> HandedWeights | None:
        """The weights the torch worker handed over (a ``.npz`` file), once it has."""
        path = self._files() / WEIGHTS
        if not path.is_file():
            return None
        given = json.loads(path.read_text())
        return HandedWeights(given["source"], given["sha256"], path.parent / STATE_DICT)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "run_dir": None if self.run_dir is None else str(self.run_dir),
            "batch_sha256": self.batch_sha256,
            "weights_sha256": self.weights_sha256,
        }

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> ModelContext:
        return cls(
            RunConfig.from_dict(fields["config"]),
            None if fields.get("run_dir") is None else Path(fields["run_dir"]),
            str(fields["batch_sha256"]),
            fields.get("weights_sha256"),
        )
