"""Integrity of the committed fixture set (fixtures/manifest.json and its files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from parity.fixtures import calibration_images, file_sha256, load_fixtures, load_manifest

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "fixtures"
MAKE_FIXTURES = FIXTURES / "make_fixtures.py"
ENTRIES = json.loads((FIXTURES / "manifest.json").read_text())["images"]
BY_ROLE = {role: [e for e in ENTRIES if e["role"] == role] for role in ("golden", "awkward")}
BY_ROLE["calibration"] = [e for e in ENTRIES if e["role"] == "calibration"]
CROP = 224


def test_manifest_roles_are_known() -> None:
    assert {e["role"] for e in ENTRIES} == {"golden", "awkward", "calibration"}


def test_names_are_unique_file_stems() -> None:
    names = [e["name"] for e in ENTRIES]
    assert len(names) == len(set(names))
    for entry in ENTRIES:
        assert Path(entry["file"]).stem == entry["name"]


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_file_exists_and_matches_manifest(entry: dict) -> None:
    path = FIXTURES / entry["file"]
    assert path.is_file()
    assert path.stat().st_size == entry["bytes"]
    assert file_sha256(path) == entry["sha256"]
    with Image.open(path) as image:
        assert (image.width, image.height, image.mode) == (
            entry["width"],
            entry["height"],
            entry["mode"],
        )


def test_no_stray_image_files() -> None:
    listed = {e["file"] for e in ENTRIES}
    on_disk = {
        p.relative_to(FIXTURES).as_posix()
        for folder in ("images", "calibration")
        for p in (FIXTURES / folder).iterdir()
        if p.is_file()
    }
    assert on_disk == listed


def test_at_least_eight_licensed_golden_photos() -> None:
    golden = BY_ROLE["golden"]
    assert len(golden) >= 8
    for entry in golden:
        assert entry["licence"].strip(), entry["name"]
        assert entry["source"].strip(), entry["name"]
        assert entry["derived_from"] is None, entry["name"]
        assert entry["mode"] == "RGB", entry["name"]
    assert all(e["licence"].strip() for e in ENTRIES)


def test_awkward_inputs_derive_from_goldens() -> None:
    goldens = {e["name"] for e in BY_ROLE["golden"]}
    for entry in BY_ROLE["awkward"]:
        assert entry["derived_from"] in goldens, entry["name"]


def _exif_orientation(entry: dict) -> int:
    with Image.open(FIXTURES / entry["file"]) as image:
        return int(image.getexif().get(0x0112, 1))


# Each awkward case, recognised by what the file is rather than by its name.
AWKWARD_KINDS = {
    "exif": lambda e: _exif_orientation(e) != 1,
    "grayscale": lambda e: e["mode"] == "L",
    "rgba": lambda e: e["mode"] == "RGBA",
    "cmyk": lambda e: e["mode"] == "CMYK",
    "16-bit": lambda e: e["mode"].startswith("I;16"),
    "small": lambda e: e["width"] < CROP and e["height"] < CROP,
    "panorama": lambda e: max(e["width"], e["height"]) >= 3 * min(e["width"], e["height"]),
    "palette": lambda e: e["mode"] == "P",
}


@pytest.mark.parametrize("kind", sorted(AWKWARD_KINDS))
def test_awkward_kind_present(kind: str) -> None:
    matches = [e["name"] for e in BY_ROLE["awkward"] if AWKWARD_KINDS[kind](e)]
    assert matches, f"no awkward fixture of kind {kind!r}"


def test_rgba_fixture_has_transparent_pixels() -> None:
    (entry,) = [e for e in BY_ROLE["awkward"] if e["mode"] == "RGBA"]
    with Image.open(FIXTURES / entry["file"]) as image:
        low, high = image.getchannel("A").getextrema()
    assert (low, high) == (0, 255)


def test_calibration_set_is_large_and_disjoint_from_goldens() -> None:
    calibration = BY_ROLE["calibration"]
    assert len(calibration) >= 16
    golden = BY_ROLE["golden"] + BY_ROLE["awkward"]
    assert not {e["name"] for e in calibration} & {e["name"] for e in golden}
    assert not {e["sha256"] for e in calibration} & {e["sha256"] for e in golden}
    # Not crops of the golden photos either: different source images.
    assert not {e["source"] for e in calibration} & {e["source"] for e in BY_ROLE["golden"]}
    assert all(e["derived_from"] is None for e in calibration)
    for entry in calibration:
        assert entry["licence"].strip()
        assert entry["mode"] == "RGB"


def test_loaders_agree_with_manifest() -> None:
    fixtures = load_fixtures(FIXTURES)
    # Manifest order (sorted by file), goldens and awkward inputs interleaved.
    assert [f.name for f in fixtures] == [
        e["name"] for e in ENTRIES if e["role"] in ("golden", "awkward")
    ]
    assert [f.name for f in load_manifest(FIXTURES, roles=("golden",))] == [
        e["name"] for e in BY_ROLE["golden"]
    ]
    calibration = calibration_images(FIXTURES)
    assert [f.name for f in calibration] == [e["name"] for e in BY_ROLE["calibration"]]
    assert all(f.role == "calibration" for f in calibration)


def test_make_fixtures_check() -> None:
    """The committed files are byte-identical to a fresh in-memory rebuild (~3.5 s).

    Run with this test's own interpreter; the source images ship inside scikit-image and
    scikit-learn, which the [dev] extra installs (through [fixtures]): a missing one, or a
    ``--check`` flag that is gone, fails here.
    """
    result = subprocess.run(
        [sys.executable, str(MAKE_FIXTURES), "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 differ" in result.stdout, result.stdout
