"""Weights: calibrated default, local state_dict files, torchvision names offline."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from deferred import deferred

from parity.backends.torch.runner import TorchRunner
from parity.errors import ParityError, WeightsError
from parity.harness import Session
from parity.weights import (
    cached_weights_sha256,
    class_names,
    load_model,
    shipped_statistics_path,
    state_dict_sha256,
)
from parity.zoo import get_card

torch = deferred("torch")

pytestmark = pytest.mark.torch


def in_a_fresh_interpreter(code: str, *args: str) -> str:
    """Run ``code`` in a fresh interpreter and return what it prints: a calibration's
    float64 pass over mobilenet_v2 peaks at ~0.5 GiB, which the pytest process (torch and
    TensorFlow already loaded) would keep as its high-water mark (bench/suite.md)."""
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_calibrated_weights_are_deterministic_and_cached(session_for: Callable[[str], Session]):
    first = session_for("mobilenet_v2").model()
    again = load_model(get_card("mobilenet_v2"))
    assert again.sha256 == first.sha256
    assert again.source == "calibrated"


@pytest.mark.parametrize(
    "model", ["mobilenet_v2", pytest.param("resnet18", marks=pytest.mark.heavy)]
)
def test_shipped_statistics_are_what_recalibration_gives(model: str, tmp_path: Path):
    """The shipped .calibrated.npz equals a fresh float64 re-estimation, to the bit."""
    card = get_card(model)
    fresh = tmp_path / "recomputed.npz"
    in_a_fresh_interpreter(
        "import sys, numpy as np; from parity.weights import calibrated_statistics;"
        " from parity.zoo import get_card;"
        " np.savez(sys.argv[2], **calibrated_statistics(get_card(sys.argv[1])))",
        model,
        str(fresh),
    )
    with np.load(shipped_statistics_path(card)) as shipped, np.load(fresh) as recomputed:
        assert sorted(shipped.files) == sorted(recomputed.files)
        for name in recomputed.files:
            assert np.array_equal(shipped[name], recomputed[name]), (
                f"{name}: python -m parity.weights {model}"
            )


def test_shipped_statistics_give_the_calibrated_weights(tmp_path: Path, monkeypatch):
    """A cold cache gets the weights from the shipped statistics, hash known before torch."""
    monkeypatch.setenv("PARITY_CACHE_DIR", str(tmp_path))
    card = get_card("mobilenet_v2")
    with np.load(shipped_statistics_path(card)) as shipped:
        expected = str(shipped["sha256"])
    assert cached_weights_sha256(card) == expected
    assert load_model(card).sha256 == expected
    (sidecar,) = (tmp_path / "weights").glob("*.sha256")
    assert sidecar.read_text().strip() == expected
    assert cached_weights_sha256(card, "IMAGENET1K_V1") is None


def test_tampered_shipped_statistics_are_not_trusted(tmp_path: Path, monkeypatch):
    """Statistics that do not give their recorded hash are re-estimated, never used."""
    monkeypatch.setenv("PARITY_CACHE_DIR", str(tmp_path / "cache"))
    card = get_card("mobilenet_v2")
    copy = tmp_path / "mobilenet_v2.toml"
    copy.write_bytes(card.path.read_bytes())
    with np.load(shipped_statistics_path(card)) as shipped:
        arrays = {name: shipped[name] for name in shipped.files}
    name = "features.0.1.running_var"
    arrays[name] = arrays[name] * np.float16(2)
    np.savez(tmp_path / "mobilenet_v2.calibrated.npz", **arrays)
    recalibrated = in_a_fresh_interpreter(
        "import sys; from parity.weights import load_model; from parity.zoo import get_card;"
        " print(load_model(get_card(sys.argv[1])).sha256)",
        str(copy),
    )
    assert recalibrated == str(arrays["sha256"])


def test_calibrated_activations_have_real_scales(session_for: Callable[[str], Session]):
    """Plain init collapses activations (logits ~1e-9); calibration must not."""
    session = session_for("mobilenet_v2")
    reference = session.reference
    logits = reference["logits"]
    assert logits.std() > 0.05
    assert len(set(logits.argmax(axis=1))) > 3, "every image predicts the same class"
    for tap in session.taps:
        assert 0.1 < np.abs(reference[tap.name]).max() < 100, tap.name


def test_plain_init_collapses_which_is_why_we_calibrate():
    card = get_card("mobilenet_v2")
    torch.manual_seed(0)
    from parity.weights import build_module

    plain = build_module(card).eval()
    with torch.no_grad():
        logits = plain(torch.rand(1, 3, 224, 224))
    assert logits.abs().max() < 1e-6


def test_state_dict_file_round_trip(local_session_for: Callable[[str], Session], tmp_path: Path):
    loaded = local_session_for("mobilenet_v2").model()
    path = tmp_path / "mobilenet_v2.pt"
    torch.save(
        {"state_dict": {f"module.{k}": v for k, v in loaded.module.state_dict().items()}}, path
    )
    reloaded = load_model(get_card("mobilenet_v2"), str(path))
    assert reloaded.sha256 == loaded.sha256 == state_dict_sha256(loaded.module.state_dict())


def test_a_state_dict_files_hash_is_known_once_loaded_and_forgotten_when_it_changes(
    local_session_for: Callable[[str], Session], tmp_path: Path, monkeypatch
):
    """What lets a warm run skip the torch worker: the hash recorded by the first load,
    keyed by the file's bytes. A changed file must not get the old hash (its cached
    reference and exports would be the old weights': a silent pass)."""
    monkeypatch.setenv("PARITY_CACHE_DIR", str(tmp_path / "cache"))
    card, state = get_card("mobilenet_v2"), local_session_for("mobilenet_v2").model().module
    path = tmp_path / "fine_tuned.pt"
    torch.save(state.state_dict(), path)
    assert cached_weights_sha256(card, str(path)) is None
    first = load_model(card, str(path))
    assert cached_weights_sha256(card, str(path)) == first.sha256
    changed = dict(state.state_dict())
    changed["features.5.conv.0.0.weight"] = changed["features.5.conv.0.0.weight"] * 1.01
    torch.save(changed, path)
    assert cached_weights_sha256(card, str(path)) is None
    second = load_model(card, str(path))
    assert second.sha256 != first.sha256
    assert cached_weights_sha256(card, str(path)) == second.sha256


def test_state_dict_missing_key_names_it(
    local_session_for: Callable[[str], Session], tmp_path: Path
):
    state = dict(local_session_for("mobilenet_v2").model().module.state_dict())
    del state["features.3.conv.1.0.weight"]
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"partial\.pt.*features\.3\.conv\.1\.0\.weight"):
        load_model(get_card("mobilenet_v2"), str(path))


def test_state_dict_file_that_is_not_torch(tmp_path: Path):
    path = tmp_path / "weights.pt"
    path.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match=r"weights\.pt: not a loadable torch state_dict"):
        load_model(get_card("resnet18"), str(path))


def test_missing_state_dict_file(tmp_path: Path):
    with pytest.raises(WeightsError, match=r"missing\.pt: state_dict file not found"):
        load_model(get_card("resnet18"), str(tmp_path / "missing.pt"))


def test_torchvision_weights_offline_names_the_cache_file(tmp_path: Path, monkeypatch):
    """No network here: the error says which file to put where."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    with pytest.raises(WeightsError) as error:
        load_model(get_card("mobilenet_v2"), "IMAGENET1K_V1")
    message = str(error.value)
    assert "MobileNet_V2_Weights.IMAGENET1K_V1" in message
    assert str(tmp_path / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth") in message


def test_torchvision_weights_from_a_filled_hub_cache(
    local_session_for: Callable[[str], Session], tmp_path: Path, monkeypatch
):
    """With the file in the hub cache, torchvision's own loader takes it, no download."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    entry = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1
    target = tmp_path / "hub" / "checkpoints" / Path(entry.url).name
    target.parent.mkdir(parents=True)
    expected = local_session_for("mobilenet_v2").model()
    torch.save(expected.module.state_dict(), target)
    loaded = load_model(get_card("mobilenet_v2"), "IMAGENET1K_V1")
    assert loaded.sha256 == expected.sha256


def test_unknown_torchvision_member():
    with pytest.raises(WeightsError, match="unknown weights 'IMAGENET9K'"):
        load_model(get_card("resnet18"), "IMAGENET9K")


def test_class_names_come_from_torchvision_metadata():
    names = class_names(get_card("mobilenet_v2"))
    assert names is not None and len(names) == 1000 and names[281] == "tabby"


def test_torch_runner_refuses_training_mode(local_session_for: Callable[[str], Session]):
    session = local_session_for("mobilenet_v2")
    module = session.model().module
    module.train()
    try:
        with (
            pytest.raises(ParityError, match="training mode"),
            TorchRunner("torch", module) as runner,
        ):
            runner.run(session.batch[:2])
    finally:
        module.eval()
