"""A warm run needs no torch: the reference taps and the weights hash come from the cache.

Each check runs the real CLI in a fresh interpreter and reports whether torch was
imported there; the same command with a tap list the cache has not seen computes the
reference with torch (in the torch worker), and says so.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from parity.harness import Session, make_runner
from parity.local import LocalSession
from parity.preprocess import tensor_sha256
from parity.reference import ReferenceCache, reference_key
from parity.taps import select_taps
from parity.variants import VARIANTS
from parity.weights import load_model

pytestmark = [pytest.mark.torch, pytest.mark.onnxruntime]

PROBE = (
    "import sys\n"
    "from parity.cli import main\n"
    "code = main(sys.argv[1:])\n"
    "print('torch imported:', 'torch' in sys.modules)\n"
    "sys.exit(code)\n"
)


def _parity(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        capture_output=True, text=True, cwd=cwd, timeout=900, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def warm(session_for: Callable[[str], Session]) -> Session:
    """mobilenet_v2 with its ort_dynamo artifact and its reference in the cache."""
    session = session_for("mobilenet_v2")
    session.artifact(VARIANTS["ort_dynamo"])
    _ = session.reference
    return session


def test_warm_live_run_imports_no_torch(warm: Session, tmp_path: Path):
    done = _parity("run", "-r", "ort_dynamo", "--summary", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reference: cached" in done.stdout
    assert "torch imported: False" in done.stdout


def test_warm_run_with_a_state_dict_file_starts_no_torch_worker(
    warm: Session, parity_cache: Path, tmp_path: Path
):
    """A user's own weights file: once loaded (here; a run's torch worker does the same),
    its hash is recorded by the file's bytes, so the next run serves the cached reference
    and export with no torch worker (it started one every run: 6.6 s instead of 1.9 s)."""
    (calibrated,) = (parity_cache / "weights").glob("mobilenet_v2-calibrated-*.pt")
    weights = tmp_path / "fine_tuned.pt"
    shutil.copyfile(calibrated, weights)  # same tensors: the session's reference and export
    assert load_model(warm.card, str(weights)).sha256 == warm.local_weights_sha256()
    done = _parity("run", "-r", "ort_dynamo", "--summary", "--weights", str(weights), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reference: cached" in done.stdout
    assert "worker onnxruntime" in done.stdout  # the progress log names every worker
    assert "worker torch" not in done.stdout


def test_golden_only_check_imports_no_torch(warm: Session, tmp_path: Path):
    done = _parity("check", "--no-live", "-r", "ort_dynamo", "--report", "r", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "torch imported: False" in done.stdout


def test_an_unseen_tap_list_computes_the_reference_with_torch(warm: Session, tmp_path: Path):
    stem = select_taps(warm.card.taps, ["stem"])
    key = reference_key(
        warm.local_weights_sha256(), tensor_sha256(warm.batch), stem, warm.card.preprocess.sha256
    )
    ReferenceCache().path(warm.card.name, key).unlink(
        missing_ok=True
    )  # unseen, even in a reused cache
    done = _parity("run", "-r", "ort_dynamo", "--tap", "stem", "--summary", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "reference: computed" in done.stdout


def test_cached_reference_equals_torch_and_a_damaged_file_is_a_miss(
    warm: Session, local_session_for: Callable[[str], LocalSession]
):
    input_sha256 = tensor_sha256(warm.batch)
    key = reference_key(
        warm.local_weights_sha256(), input_sha256, warm.taps, warm.card.preprocess.sha256
    )
    cache = ReferenceCache()
    cached = cache.load(warm.card.name, key, warm.taps)
    assert cached is not None
    module = local_session_for(warm.card.name).model().module  # torch here, on purpose
    with make_runner(VARIANTS["torch"], module, 1) as runner:
        now = runner.run(warm.batch, warm.taps)
    for tap in warm.taps:
        np.testing.assert_array_equal(cached[tap.name], now[tap.name], tap.name)
    path = cache.path(warm.card.name, key)
    data = bytearray(path.read_bytes())
    try:
        path.write_bytes(bytes(data[: len(data) // 2]))  # truncated: never used
        assert cache.load(warm.card.name, key, warm.taps) is None
    finally:
        path.write_bytes(bytes(data))
