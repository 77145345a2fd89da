"""The golden store: provenance, staleness, sketches, atomic updates, regression checks."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from parity.backends.onnxruntime.runner import OnnxRuntimeRunner
from parity.faults import perturb_onnx_conv
from parity.fixtures import load_fixtures
from parity.golden import GoldenStore, StaleGoldenError, TapRecord, golden_moves, golden_verdict
from parity.harness import RunConfig, Session
from parity.paths import bundled_dir, find_project
from parity.preprocess import preprocess_batch
from parity.tolerances import TolerancePolicy
from parity.variants import VARIANTS
from parity.zoo import get_card

BUNDLED_GOLDENS = bundled_dir("fixtures") / "goldens"


def test_committed_goldens_are_small():
    committed = [
        p for p in BUNDLED_GOLDENS.rglob("*") if p.is_file() and ".obtained." not in p.name
    ]
    total = sum(p.stat().st_size for p in committed)
    assert total < 20 * 2**20, f"goldens take {total / 2**20:.1f} MiB"


def test_sketch_sees_an_error_the_subsample_misses():
    rng = np.random.default_rng(0)
    value = rng.standard_normal((32, 28, 28)).astype(np.float32)
    record = TapRecord.of(value)
    assert record.full is None  # large: sketched
    spiked = value.copy()
    spiked.reshape(-1)[1] += 0.5  # index 1 is not in the strided subsample
    metrics = record.compare(spiked)
    assert metrics.max_abs_norm == 0.0  # the subsample cannot see it ...
    assert np.isfinite(metrics.sqnr_db) and metrics.cosine < 1.0  # ... the CountSketch does
    assert record.compare(value).sqnr_db == np.inf


def test_sketch_sqnr_tracks_the_true_sqnr():
    rng = np.random.default_rng(1)
    value = rng.standard_normal((64, 14, 14))
    noisy = value + 1e-3 * rng.standard_normal(value.shape)
    true_sqnr = 10 * np.log10((value**2).sum() / ((noisy - value) ** 2).sum())
    estimated = TapRecord.of(value).compare(noisy.astype(np.float32)).sqnr_db
    assert abs(estimated - true_sqnr) < 1.0  # dB


def test_small_taps_are_stored_in_full():
    logits = np.arange(1000, dtype=np.float32)
    assert np.array_equal(TapRecord.of(logits).full, logits)


@pytest.fixture(scope="module")
def goldens_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("goldens")
    shutil.copytree(BUNDLED_GOLDENS / "mobilenet_v2", root / "mobilenet_v2")
    return root


@pytest.mark.torch
@pytest.mark.parametrize(
    "model", ["mobilenet_v2", pytest.param("resnet18", marks=pytest.mark.heavy)]
)  # resnet18: its reference is computed for this check alone by default
def test_torch_matches_committed_goldens(session_for: Callable[[str], Session], model: str):
    result = session_for(model).check_golden(VARIANTS["torch"])
    assert result.passed, result.verdict and result.verdict.explain()


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_ort_matches_committed_goldens(session_for: Callable[[str], Session]):
    result = session_for("mobilenet_v2").check_golden(VARIANTS["ort_dynamo"])  # export shared
    assert result.passed and result.mode == "golden"


@pytest.mark.torch
def test_changed_preprocessing_is_stale_and_says_what(tmp_path: Path, goldens_copy: Path):
    card = tmp_path / "mobilenet_v2.toml"
    text = (bundled_dir("models") / "mobilenet_v2.toml").read_text()
    card.write_text(text.replace('preset = "torchvision-imagenet"', 'resize_filter = "bicubic"'))
    session = Session(RunConfig(model=str(card), goldens=goldens_copy))
    with pytest.raises(StaleGoldenError, match="resize_filter: 'bilinear' -> 'bicubic'"):
        _ = session.goldens


@pytest.mark.torch
def test_changed_weights_are_stale(
    local_session_for: Callable[[str], Session], tmp_path: Path, goldens_copy: Path
):
    import torch

    state = {
        k: v.clone()
        for k, v in local_session_for("mobilenet_v2").model().module.state_dict().items()
    }
    state["features.3.conv.1.0.weight"] *= 1.01
    path = tmp_path / "tuned.pt"
    torch.save(state, path)
    session = Session(RunConfig(weights=str(path), goldens=goldens_copy))
    with pytest.raises(StaleGoldenError, match="weights changed"):
        _ = session.goldens


@pytest.mark.torch
def test_modified_golden_file_is_detected(tmp_path: Path):
    root = tmp_path / "goldens"
    shutil.copytree(BUNDLED_GOLDENS / "mobilenet_v2", root / "mobilenet_v2")
    npz = root / "mobilenet_v2" / "coffee.npz"
    npz.write_bytes(npz.read_bytes()[:-10] + b"0" * 10)
    with pytest.raises(StaleGoldenError, match=r"coffee\.npz: golden file missing or modified"):
        _ = Session(RunConfig(goldens=root)).goldens


@pytest.mark.torch
@pytest.mark.onnxruntime
def test_perturbed_runtime_fails_the_regression_check_at_its_tap(
    session_for: Callable[[str], Session], tmp_path: Path
):
    session = session_for("mobilenet_v2")
    broken = tmp_path / "broken.onnx"
    perturb_onnx_conv(session.artifact(VARIANTS["ort_dynamo"]).path, broken, "features.7")
    with OnnxRuntimeRunner("ort_dynamo", broken) as runner:
        obtained = runner.run(session.batch, session.taps)
    index = [f.name for f in session.fixtures].index("chelsea")
    verdict = golden_verdict(
        "mobilenet_v2", "ort_dynamo", session.taps, session.goldens, "chelsea",
        {k: v[index] for k, v in obtained.items()}, session.policy,
    )  # fmt: skip
    assert verdict.first_failure is not None
    assert verdict.first_failure.tap.name == "features.7"


@pytest.mark.torch
def test_update_writes_atomically_and_reports_moves(tmp_path: Path):
    root = tmp_path / "goldens"
    session = Session(RunConfig(goldens=root))
    first = session.golden_moves()
    assert not first.exists
    session.write_goldens()
    store = GoldenStore(root, "mobilenet_v2")
    files = sorted(p.name for p in store.folder.iterdir())
    assert "provenance.json" in files and "chelsea.npz" in files
    assert not [f for f in files if ".tmp" in f], files
    provenance = json.loads(store.provenance_path.read_text())
    assert provenance["weights"]["sha256"] == session.model().sha256
    assert {"torch", "torchvision", "numpy", "pillow"} <= set(provenance["versions"])
    again = Session(RunConfig(goldens=root)).golden_moves()
    assert again.exists and again.changes == ()
    assert all(m.max_abs_norm == 0.0 for m in again.taps.values())


def test_moves_name_a_changed_input(goldens_copy: Path):
    """update-goldens --dry-run says which fixture's input tensor differs from the one the
    goldens were made from (golden_moves compares its batch with the provenance)."""
    card = get_card("mobilenet_v2")
    store = GoldenStore(goldens_copy, card.name)
    fixtures = load_fixtures(find_project().fixtures)
    spec = card.preprocess.replace(layout="NCHW")
    batch = preprocess_batch([f.path for f in fixtures], spec)
    known = {"weights_sha256": store.provenance().weights_sha256, "versions": {}}
    assert golden_moves(store, fixtures, batch, {}, [], spec=card.preprocess, **known).changes == ()
    batch[3, 0, 0, 0] += 0.5
    moves = golden_moves(store, fixtures, batch, {}, [], spec=card.preprocess, **known)
    assert moves.changes == (f"input changed: {fixtures[3].name}",)


def test_golden_npz_loads_without_pickle():
    store = GoldenStore(BUNDLED_GOLDENS, "mobilenet_v2")
    arrays = store.load("chelsea")
    assert arrays["logits/full"].shape == (1000,)
    assert "features.3/sketch" in arrays
    policy = TolerancePolicy.load(BUNDLED_GOLDENS.parent / "tolerances.toml")
    assert policy.budget("mobilenet_v2", "torch", "logits").limits["min_top1_agreement"] == 1.0
