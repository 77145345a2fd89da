"""Bundles: artifacts and goldens built once, checked in runtime-only environments.

A bundle is a folder made where torch and TensorFlow are installed (``parity bundle``,
tox env ``build``) and read where only one runtime is (tox envs ``ort``, ``litert``, ...)::

    <bundle>/manifest.json                          hashes and provenance of everything
    <bundle>/artifacts/<model>/<exporter>/...       each artifact folder, as cached
    <bundle>/goldens/<model>/...                    the goldens the artifacts are judged by

Reading a bundle needs numpy only. Every artifact's sha256 is checked on use.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from parity import __version__, atomic
from parity.backends import backends
from parity.errors import ArtifactError, ParityError
from parity.exported import Artifact
from parity.fixtures import file_sha256
from parity.lazy import package_version

MANIFEST = "manifest.json"
BUILD_HINT = "build it with `tox -e build` or `parity bundle --out DIR`"


class BundleError(ParityError):
    """A bundle is missing, incomplete or stale."""


@dataclasses.dataclass(frozen=True)
class BundleModel:
    """One model's entry in a bundle manifest."""

    name: str
    weights_source: str
    weights_sha256: str
    preprocess_sha256: str
    artifacts: dict[str, dict[str, Any]]


class Bundle:
    """A read-only bundle folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        manifest = self.root / MANIFEST
        if not manifest.is_file():
            raise BundleError(f"{manifest}: no bundle here; {BUILD_HINT}")
        try:
            self.data: dict[str, Any] = json.loads(manifest.read_text())
        except json.JSONDecodeError as exc:
            raise BundleError(f"{manifest}: not valid JSON ({exc}); {BUILD_HINT}") from None

    @property
    def goldens(self) -> Path:
        return self.root / "goldens"

    def model(self, name: str, preprocess_sha256: str) -> BundleModel:
        """A model's entry; stale if it was built with another preprocessing spec."""
        entry = self.data["models"].get(name)
        if entry is None:
            raise BundleError(
                f"{self.root / MANIFEST}: bundle has no model '{name}' "
                f"(it has {sorted(self.data['models'])}); {BUILD_HINT}"
            )
        model = BundleModel(name=name, **entry)
        if model.preprocess_sha256 != preprocess_sha256:
            raise BundleError(
                f"{self.root / MANIFEST}: bundle is stale for '{name}': built with preprocessing "
                f"{model.preprocess_sha256[:12]}, the model card now has {preprocess_sha256[:12]}; "
                f"re{BUILD_HINT}"
            )
        self._check_goldens(name)
        return model

    def _check_goldens(self, name: str) -> None:
        """The bundle's goldens of ``name``: present, in this parity's format, hashes intact.

        Without this, a bundle from an older parity or with a damaged golden fails with the
        golden store's message, which says to regenerate or restore the goldens in the
        repository rather than to rebuild the bundle.
        """
        from parity.golden import FORMAT, GoldenStore

        store = GoldenStore(self.goldens, name)
        provenance = store.provenance_path
        try:
            data = json.loads(provenance.read_text())
        except (OSError, json.JSONDecodeError):
            raise BundleError(
                f"{provenance}: bundle goldens of '{name}' missing or unreadable; {BUILD_HINT}"
            ) from None
        if data.get("format") != FORMAT:
            raise BundleError(
                f"{provenance}: bundle goldens are format {data.get('format')}, this parity "
                f"reads format {FORMAT}: the bundle is stale; re{BUILD_HINT}"
            )
        for fixture, entry in data.get("images", {}).items():
            npz = store.npz_path(fixture)
            if not npz.is_file() or file_sha256(npz) != entry.get("npz_sha256"):
                raise BundleError(
                    f"{npz}: bundle golden missing or modified (sha256 differs from "
                    f"provenance.json); {BUILD_HINT}"
                )

    def artifact(self, model: BundleModel, exporter: str) -> Artifact:
        """An artifact of the bundle, its bytes checked against the manifest."""
        entry = model.artifacts.get(exporter)
        if entry is None:
            raise BundleError(
                f"{self.root / MANIFEST}: bundle has no '{exporter}' artifact for "
                f"'{model.name}'; {BUILD_HINT} including that runtime"
            )
        path = self.root / entry["path"]
        if not path.is_file() or file_sha256(path) != entry["sha256"]:
            raise ArtifactError(
                f"{path}: bundle artifact missing or modified (sha256 differs from the "
                f"manifest); {BUILD_HINT}"
            )
        return Artifact(exporter, path, entry["metadata"]["key"], entry["metadata"], built=False)


def write_bundle(
    root: Path,
    models: Sequence[tuple[str, str, str, str, Sequence[Artifact], Path]],
    progress: Callable[[str], None] = lambda message: None,
) -> Path:
    """Copy artifacts and goldens into ``root`` and write its manifest last.

    ``models``: (name, weights source, weights sha256, preprocess sha256, artifacts,
    goldens folder) per model.
    """
    root = Path(root)
    entries: dict[str, Any] = {}
    for name, source, weights_sha, spec_sha, artifacts, goldens in models:
        if not (goldens / "provenance.json").is_file():
            raise BundleError(f"{goldens}: no goldens for {name}; run parity update-goldens first")
        target = root / "goldens" / name
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(goldens, target, ignore=shutil.ignore_patterns("*.obtained.*", ".*"))
        copied = {}
        for artifact in artifacts:
            progress(f"bundling {name} {artifact.exporter}")
            folder = root / "artifacts" / name / artifact.exporter
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(artifact.path.parent, folder)
            path = folder / artifact.path.name
            copied[artifact.exporter] = {
                "path": str(path.relative_to(root)),
                "sha256": artifact.metadata["sha256"],
                "metadata": artifact.metadata,
            }
        entries[name] = {
            "weights_source": source,
            "weights_sha256": weights_sha,
            "preprocess_sha256": spec_sha,
            "artifacts": copied,
        }
    manifest = {
        "format": 1,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "parity_version": __version__,
        "versions": {
            p: package_version(p)
            for p in (*(v for b in backends().values() for v in b.versions), "numpy", "pillow")
        },
        "models": entries,
    }
    atomic.write_text(root / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return root / MANIFEST
