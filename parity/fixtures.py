"""Fixture images: the committed manifest, or any folder of images.

A fixture set is the ordered list of images fed to every runtime. The bundled set
(``fixtures/manifest.json``) records each file's sha256, so a changed or corrupted
fixture is an error rather than a silently different golden.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path

from parity.errors import FixtureError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
MANIFEST = "manifest.json"


@dataclasses.dataclass(frozen=True)
class Fixture:
    """One image: its name (the file stem, used in test ids and reports) and path."""

    name: str
    path: Path
    role: str = "golden"
    sha256: str | None = None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_manifest(root: Path, roles: Sequence[str] = ("golden", "awkward")) -> list[Fixture]:
    """Fixtures of the given roles from ``root/manifest.json``, checked against their sha256."""
    manifest = root / MANIFEST
    try:
        entries = json.loads(manifest.read_text())["images"]
    except FileNotFoundError:
        raise FixtureError(f"{manifest}: fixture manifest not found") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise FixtureError(f"{manifest}: malformed manifest ({exc})") from None
    fixtures = []
    for index, entry in enumerate(entries):
        try:
            role, file, name, expected = (entry[k] for k in ("role", "file", "name", "sha256"))
        except (KeyError, TypeError) as exc:
            raise FixtureError(f"{manifest}: malformed entry #{index} ({exc!r})") from None
        if role not in roles:
            continue
        path = root / file
        if not path.is_file():
            raise FixtureError(f"{path}: listed in {manifest} but missing")
        actual = file_sha256(path)
        if actual != expected:
            raise FixtureError(
                f"{path}: sha256 {actual[:12]}… does not match the manifest's "
                f"{str(expected)[:12]}…; the fixture changed (regenerate with "
                "fixtures/make_fixtures.py and update goldens deliberately)"
            )
        fixtures.append(Fixture(name, path, role, actual))
    if not fixtures:
        raise FixtureError(f"{manifest}: no images with role {list(roles)}")
    return fixtures


def load_fixtures(root: Path, roles: Sequence[str] = ("golden", "awkward")) -> list[Fixture]:
    """The manifest's fixtures if ``root`` has one, else every image file in ``root``."""
    root = Path(root)
    if not root.exists():
        raise FixtureError(f"{root}: no such fixtures directory")
    if root.is_file():
        return [Fixture(root.stem, root)]
    if (root / MANIFEST).is_file():
        return load_manifest(root, roles)
    files = sorted(
        (p for p in root.iterdir() if not p.name.startswith(".") and _is_image_entry(p)),
        key=lambda p: (p.stem, p.name),
    )
    if not files:
        raise FixtureError(
            f"{root}: no image files (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    names = [p.stem for p in files]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise FixtureError(f"{root}: several files share the names {clashes}")
    return [Fixture(p.stem, p) for p in files]


def _is_image_entry(path: Path) -> bool:
    """True for an image file, False for what is plainly not one (``README.txt``, a
    sub-folder); an entry that should be an image but cannot be is an error naming it.

    A broken link, a link loop, an unreadable file or a non-file with an image suffix
    would otherwise shrink the fixture set without a word. Hidden entries are skipped
    by the caller.
    """
    try:
        mode = path.stat().st_mode  # follows links
    except FileNotFoundError:
        raise FixtureError(f"{path}: broken symbolic link (its target does not exist)") from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FixtureError(f"{path}: symbolic link loop") from None
        raise FixtureError(f"{path}: cannot read ({exc.strerror})") from None
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return False
    if stat.S_ISDIR(mode):
        raise FixtureError(f"{path}: a folder named like an image")
    if not stat.S_ISREG(mode):
        raise FixtureError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise FixtureError(f"{path}: cannot read (permission denied)")
    return True


def calibration_images(root: Path) -> list[Fixture]:
    """The calibration images (BatchNorm re-estimation, int8 calibration)."""
    return load_manifest(Path(root), roles=("calibration",))
