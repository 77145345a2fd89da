"""The preprocessed batch kept in the cache: read back bitwise, keyed by every input, and
made again when the stored file is damaged."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from parity import batchcache
from parity.batchcache import batch_key, cached_batch
from parity.fixtures import Fixture, load_fixtures
from parity.preprocess import PreprocessSpec, preprocess_batch

FIXTURES = load_fixtures(Path(__file__).resolve().parents[1] / "fixtures")[:3]
SPEC = PreprocessSpec()


def made_now(fixtures: list[Fixture], spec: PreprocessSpec = SPEC) -> np.ndarray:
    return preprocess_batch([f.path for f in fixtures], spec)


def test_a_stored_batch_is_read_back_bitwise_without_preprocessing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = cached_batch(FIXTURES, SPEC, tmp_path)
    assert np.array_equal(first, made_now(FIXTURES))
    assert [p.name for p in tmp_path.iterdir()] == [f"{batch_key(FIXTURES, SPEC)}.npy"]

    def refuse(*_args: object) -> np.ndarray:
        raise AssertionError("preprocessed again although the batch was stored")

    monkeypatch.setattr(batchcache, "preprocess_batch", refuse)
    again = cached_batch(FIXTURES, SPEC, tmp_path)
    assert again.dtype == first.dtype and again.tobytes() == first.tobytes()


def test_an_image_the_spec_or_the_code_changed_is_another_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = batch_key(FIXTURES, SPEC)
    flipped = tmp_path / "flipped.png"
    Image.open(FIXTURES[0].path).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped)
    other_image = [Fixture(FIXTURES[0].name, flipped), *FIXTURES[1:]]  # no sha256: read now
    assert batch_key(other_image, SPEC) != key
    assert batch_key(FIXTURES, SPEC.replace(resize_filter="bicubic")) != key
    assert batch_key(FIXTURES, SPEC.replace(layout="NHWC")) != key
    code = tmp_path / "preprocess.py"
    shutil.copy(batchcache.preprocessing.__file__, code)
    with code.open("a") as handle:
        handle.write("\n# an edit\n")
    monkeypatch.setattr(batchcache.preprocessing, "__file__", str(code))
    assert batch_key(FIXTURES, SPEC) != key
    # and the batch of the changed image is its own, not the stored one
    root = tmp_path / "cache"
    cached_batch(FIXTURES, SPEC, root)
    assert np.array_equal(cached_batch(other_image, SPEC, root), made_now(other_image))


@pytest.mark.parametrize("damage", [b"", b"\x93NUMPY garbage", "other-shape"])
def test_a_damaged_stored_batch_is_made_again_and_replaced(
    tmp_path: Path, damage: bytes | str
) -> None:
    path = tmp_path / f"{batch_key(FIXTURES, SPEC)}.npy"
    if damage == "other-shape":
        np.save(path, np.zeros((2, 3, 224, 224), np.float32))  # two images, not three
    else:
        path.write_bytes(damage)  # type: ignore[arg-type]
    batch = cached_batch(FIXTURES, SPEC, tmp_path)
    assert np.array_equal(batch, made_now(FIXTURES))
    assert np.array_equal(np.load(path), batch)


def test_a_full_disk_is_one_line_and_leaves_no_file(tmp_path: Path) -> None:
    """A real EFBIG (a 1 MB file size limit under the 1.8 MB batch): the error names the
    file, nothing is left in the folder."""
    code = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))\n"
        "from parity.batchcache import cached_batch\n"
        "from parity.errors import ParityError\n"
        "from parity.fixtures import load_fixtures\n"
        "from parity.preprocess import PreprocessSpec\n"
        "fixtures = load_fixtures(Path(sys.argv[1]))[:3]\n"
        "try:\n"
        "    cached_batch(fixtures, PreprocessSpec(), Path(sys.argv[2]))\n"
        "except ParityError as exc:\n"
        "    print(exc)\n"
    )
    root = Path(__file__).resolve().parents[1] / "fixtures"
    done = subprocess.run(
        [sys.executable, "-c", code, str(root), str(tmp_path / "batches")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    (line,) = done.stdout.splitlines()  # numpy's short write: "N requested and M written"
    assert line.startswith(str(tmp_path / "batches")) and ".npy: cannot write (" in line
    assert line.endswith("nothing was left half-written")
    assert list((tmp_path / "batches").iterdir()) == []
