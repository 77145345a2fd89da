"""Cached torch reference taps: a warm run needs no torch when nothing changed (numpy only).

The reference is keyed by everything it depends on: the weights sha256, the input tensor
sha256, the tap list, the torch version and the preprocessing spec. The orchestrator asks
:meth:`ReferenceCache.load` first and runs torch only on a miss, then :meth:`store`s the
taps. Files are ``.npz`` written atomically; one that cannot be read back whole (zip CRC,
truncation) is a miss, never used.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from parity.lazy import package_version
from parity.paths import cache_dir
from parity.taps import Tap


def reference_key(
    weights_sha256: str, input_sha256: str, taps: Sequence[Tap], spec_sha256: str
) -> str:
    """The cache key of one reference run."""
    parts = {
        "weights": weights_sha256,
        "input": input_sha256,
        "taps": [tap.to_dict() for tap in taps],
        "torch": package_version("torch"),
        "spec": spec_sha256,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


class ReferenceCache:
    """Reference taps on disk, ``<root>/<model>-<key>.npz`` (root: ``<cache>/reference``)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_dir() / "reference"

    def path(self, model: str, key: str) -> Path:
        return self.root / f"{model}-{key}.npz"

    def load(self, model: str, key: str, taps: Sequence[Tap]) -> dict[str, np.ndarray] | None:
        """Every stored output (the taps and the model's output), or None when absent,
        unreadable or missing a tap (then recompute)."""
        path = self.path(model, key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except (OSError, ValueError, zipfile.BadZipFile):
            return None
        return arrays if all(tap.name in arrays for tap in taps) else None

    def store(self, model: str, key: str, taps: Mapping[str, np.ndarray]) -> None:
        """Write the taps atomically (a temporary file renamed into place)."""
        path = self.path(model, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.tmp{os.getpid()}.npz")
        arrays: dict[str, np.ndarray] = dict(taps)
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
