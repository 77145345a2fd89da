"""The labelled dataset: an ImageFolder tree scanned into a deterministic listing, and the
selection (``--limit``) and sharding (``--shard k/N``) of its images (rules: see
:mod:`parity.evaluate`).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from parity.errors import FixtureError, ParityError
from parity.fixtures import IMAGE_SUFFIXES

#: Root-level files that define the folder -> class index mapping.
MAPPING_FILES = ("classes.txt", "synsets.txt")


@dataclasses.dataclass(frozen=True)
class LabelledImage:
    index: int
    path: Path
    #: ``<class folder>/<file>``: stable across machines, used in reports.
    name: str
    label: int


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """A scanned ImageFolder tree with its class mapping."""

    root: Path
    #: class folder name -> class index.
    classes: dict[str, int]
    #: which rule mapped the folders (``classes.txt``, ``class names``, ...).
    mapping: str
    images: tuple[LabelledImage, ...]

    @property
    def sha256(self) -> str:
        """Fingerprint of the listing (names, labels, file sizes); shards must agree on it."""
        digest = hashlib.sha256()
        for image in self.images:
            digest.update(f"{image.name}|{image.label}|{image.path.stat().st_size}\n".encode())
        return digest.hexdigest()


def _mapping_file(root: Path) -> tuple[str, list[str]] | None:
    for name in MAPPING_FILES:
        path = root / name
        if path.is_file():
            lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            if name == "synsets.txt":
                lines = [line.split()[0] for line in lines]
            return name, lines
    return None


def _class_indices(
    root: Path, folders: Sequence[str], num_classes: int, class_names: Sequence[str] | None
) -> tuple[dict[str, int], str]:
    """Folder name -> class index, by the rules in the module docstring."""
    mapping = _mapping_file(root)
    if mapping is not None:
        file, names = mapping
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise FixtureError(f"{root / file}: names repeat: {duplicated[:5]}")
        if len(names) != num_classes:
            raise FixtureError(
                f"{root / file}: lists {len(names)} classes, the model has {num_classes}"
            )
        unknown = [f for f in folders if f not in names]
        if unknown:
            raise FixtureError(f"{root}: class folders not listed in {file}: {unknown[:5]}")
        return {f: names.index(f) for f in folders}, file
    if class_names is not None and all(f in class_names for f in folders):
        ambiguous = [f for f in folders if list(class_names).count(f) > 1]
        if ambiguous:
            raise FixtureError(
                f"{root}: class folder names {ambiguous} are ambiguous in the model's class "
                "names (several classes share them); name the folders by synset and add a "
                "synsets.txt"
            )
        return {f: list(class_names).index(f) for f in folders}, "class names"
    if all(f.isdigit() and int(f) < num_classes for f in folders):
        return {f: int(f) for f in folders}, "numeric folder names"
    if len(folders) == num_classes:
        return {f: i for i, f in enumerate(sorted(folders))}, "sorted folder order"
    raise FixtureError(
        f"{root}: cannot map {len(folders)} class folders (e.g. {list(folders)[:3]}) to the "
        f"model's {num_classes} classes: they are not its class names, not class indices, "
        f"and not one folder per class; add a classes.txt or synsets.txt (one folder name "
        f"per line, in class-index order) at the root"
    )


def scan_image_folder(
    root: Path, num_classes: int, class_names: Sequence[str] | None = None
) -> ImageFolder:
    """Scan ``root/<class>/<image>`` into a labelled, deterministically ordered listing."""
    root = Path(root)
    if not root.is_dir():
        raise FixtureError(f"{root}: no such dataset directory")
    folders: list[Path] = []
    strays: list[Path] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name in MAPPING_FILES:
            continue
        (folders if entry.is_dir() else strays).append(entry)
    if strays:
        raise FixtureError(
            f"{strays[0]}: a file at the root of an ImageFolder dataset; images go in one "
            "sub-folder per class (only classes.txt / synsets.txt may sit at the root)"
        )
    if not folders:
        raise FixtureError(f"{root}: no class folders (expected ImageFolder layout root/<class>/)")
    classes, rule = _class_indices(root, [f.name for f in folders], num_classes, class_names)
    images: list[LabelledImage] = []
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        if not files:
            raise FixtureError(f"{folder}: empty class folder")
        for path in files:
            if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                kind = "a folder" if path.is_dir() else "not an image file"
                raise FixtureError(
                    f"{path}: {kind} inside a class folder (images only: "
                    f"{', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            name = f"{folder.name}/{path.name}"
            images.append(LabelledImage(len(images), path, name, classes[folder.name]))
    return ImageFolder(root, classes, rule, tuple(images))


# -- selection and sharding ------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """``"k/N"`` -> ``(k, N)`` with ``0 <= k < N``."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ParityError(f"--shard {text!r}: expected k/N, e.g. 0/4") from None
    if n < 1 or not 0 <= k < n:
        raise ParityError(f"--shard {text!r}: need 0 <= k < N (shards are numbered from 0)")
    return k, n


def select_indices(total: int, limit: int | None = None) -> list[int]:
    """The evaluated image indices: all, or ``limit`` spread evenly over the order."""
    if limit is None or limit >= total:
        return list(range(total))
    if limit < 1:
        raise ParityError(f"--limit {limit}: must be at least 1")
    return [int(i) for i in np.linspace(0, total - 1, limit).round().astype(int)]


def shard_indices(selected: Sequence[int], shard: tuple[int, int] | None) -> list[int]:
    if shard is None:
        return list(selected)
    k, n = shard
    return list(selected[k::n])
