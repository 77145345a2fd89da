"""Artifacts cached by content: a second run with the same inputs re-exports nothing.

The cache key of an artifact hashes everything its bytes depend on: the exporter and
its options, the weights sha256, the preprocessing spec sha256, the versions of the
packages that produce it, and the keys of the artifacts it is built from. Each entry is
a folder written under a temporary name and renamed into place, with a ``meta.json``
recording the main file's sha256; a cached file whose bytes no longer match is an
error naming it, never silently used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from filelock import FileLock

from parity.backends import Exporter, get_exporter
from parity.converters import spec as converter_spec
from parity.errors import ArtifactError
from parity.exported import Artifact
from parity.fixtures import calibration_images, file_sha256, load_fixtures
from parity.isa import kernel_isa
from parity.lazy import package_version
from parity.paths import cache_dir, calibration_dir
from parity.preprocess import preprocess_batch
from parity.weights import Weights
from parity.zoo import ModelCard

#: Bump when an exporter's code changes what it writes.
CACHE_FORMAT = 1
#: Append-only log in the cache root: one line per artifact exported, with the process id.
EXPORT_LOG = "exports.log"


def card_calibration_dir(card: ModelCard) -> Path:
    """The card's ``calibration`` folder: ``{cache}`` expanded, relative to the card's file."""
    assert card.calibration is not None
    folder = Path(card.calibration.replace("{cache}", str(cache_dir())))
    return folder if folder.is_absolute() else card.path.parent / folder


class BuildContext:
    """What exporters may ask for: the card, the torch model, upstream artifacts, data.

    Everything is computed on first use, so a fully cached run never builds the
    calibration batch or touches an exporter's framework.
    """

    def __init__(
        self,
        card: ModelCard,
        model: Callable[[], Weights],
        cache: ArtifactCache,
        progress: Callable[[str], None] = lambda message: None,
        weights_sha256: Callable[[], str] | None = None,
    ) -> None:
        self.card = card
        self._model = model
        self._weights_sha256 = weights_sha256
        self.cache = cache
        self.progress = progress
        self._calibration: np.ndarray | None = None

    def model(self) -> Weights:
        return self._model()

    def weights_sha256(self) -> str:
        """The weights' hash (part of every cache key), without loading them when known."""
        return self._weights_sha256() if self._weights_sha256 else self.model().sha256

    def artifact(self, exporter: str) -> Artifact:
        """An upstream artifact, built or read from the cache."""
        return self.cache.get(get_exporter(exporter), self)

    def calibration_batch(self) -> np.ndarray:
        """The calibration images through the card's preprocessing, NCHW float32.

        From the card's ``calibration`` folder if it names one, else fixtures/calibration.
        """
        if self._calibration is None:
            if self.card.calibration:
                images = load_fixtures(card_calibration_dir(self.card))
            else:
                images = calibration_images(calibration_dir())
            self._calibration = preprocess_batch([f.path for f in images], self.card.preprocess)
        return self._calibration


class ArtifactCache:
    """Folder of artifacts keyed by content hash (``<root>/<model>/<exporter>-<key>/``)."""

    def __init__(self, root: Path | None = None, rebuild: bool = False) -> None:
        self.root = Path(root) if root is not None else cache_dir() / "artifacts"
        self.rebuild = rebuild
        self._memo: dict[str, Artifact] = {}

    def key(self, exporter: Exporter, ctx: BuildContext) -> str:
        parts = {
            "format": CACHE_FORMAT,
            "exporter": exporter.name,
            "options": dict(exporter.options),
            "weights": ctx.weights_sha256(),
            "preprocess": ctx.card.preprocess.sha256,
            "input_shape": ctx.card.input_shape,
            "versions": {p: package_version(p) for p in exporter.packages},
            "upstream": {r: self.key(get_exporter(r), ctx) for r in exporter.requires},
        }
        if ctx.card.calibration:  # cards with their own int8 calibration set
            parts["calibration"] = ctx.card.calibration
        if exporter.converter:  # made in a converter environment: its pins' key
            parts["converter"] = converter_spec(exporter.converter).key()
        if exporter.keyed_on_taps:  # the artifact records where the card's taps are
            parts["taps"] = [t.to_dict() for t in ctx.card.taps]
        if exporter.keyed_on_cpu:  # compiled kernels: never another ISA's
            parts["cpu"] = kernel_isa()
        blob = json.dumps(parts, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:20]

    def is_cached(self, exporter: Exporter, ctx: BuildContext) -> bool:
        """Whether :meth:`get` would read the artifact rather than build it (no export)."""
        if self.rebuild:
            return False
        folder = self.root / ctx.card.name / f"{exporter.name}-{self.key(exporter, ctx)}"
        return (folder / "meta.json").is_file() and (folder / exporter.filename).is_file()

    def get(self, exporter: Exporter, ctx: BuildContext) -> Artifact:
        """The artifact for ``exporter`` and ``ctx``: from the cache, or built now."""
        key = self.key(exporter, ctx)
        if key in self._memo:
            return self._memo[key]
        folder = self.root / ctx.card.name / f"{exporter.name}-{key}"
        folder.parent.mkdir(parents=True, exist_ok=True)
        # Across processes (pytest-xdist workers, parallel CI jobs on one cache): the first
        # exports while the others wait, then read its result; nothing is exported twice.
        with FileLock(folder.with_name(f"{folder.name}.lock")):
            if folder.is_dir() and self.rebuild:
                shutil.rmtree(folder)
            artifact = self._read(folder, exporter, key) if folder.is_dir() else None
            if artifact is None:
                artifact = self._build(folder, exporter, key, ctx)
        self._memo[key] = artifact
        return artifact

    def _read(self, folder: Path, exporter: Exporter, key: str) -> Artifact:
        path = folder / exporter.filename
        try:
            metadata = json.loads((folder / "meta.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError) as exc:
            raise ArtifactError(
                f"{folder}: cached artifact has no readable meta.json ({exc}); "
                "rerun with --rebuild or delete the folder"
            ) from None
        if not path.is_file() or file_sha256(path) != metadata["sha256"]:
            raise ArtifactError(
                f"{path}: cached artifact is missing or its bytes changed (sha256 differs from "
                f"meta.json); rerun with --rebuild or delete {folder}"
            )
        return Artifact(exporter.name, path, key, metadata, built=False)

    def _build(self, folder: Path, exporter: Exporter, key: str, ctx: BuildContext) -> Artifact:
        ctx.progress(f"exporting {ctx.card.name} -> {exporter.name}")
        tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        start = time.perf_counter()
        try:
            metadata = exporter.function()(ctx, tmp / exporter.filename, exporter.options)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        path = tmp / exporter.filename
        metadata.update(
            exporter_name=exporter.name,
            key=key,
            model=ctx.card.name,
            weights_sha256=ctx.weights_sha256(),
            preprocess_sha256=ctx.card.preprocess.sha256,
            versions={p: package_version(p) for p in exporter.packages},
            export_seconds=round(time.perf_counter() - start, 3),
            sha256=file_sha256(path),
            bytes=path.stat().st_size,
        )
        (tmp / "meta.json").write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp, folder)
        except OSError:  # another process won the race: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
            return self._read(folder, exporter, key)
        with open(self.root / EXPORT_LOG, "a") as log:  # who built what (one line per export)
            log.write(f"{folder.relative_to(self.root)} pid={os.getpid()} "
                      f"seconds={metadata['export_seconds']}\n")  # fmt: skip
        return Artifact(exporter.name, folder / exporter.filename, key, metadata, built=True)
