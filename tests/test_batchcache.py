"""The preprocessed batch kept in the cache: read back bitwise, keyed by every input, and
made again when the stored file is damaged."""

from __future__ import annotations

import shutil
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
