"""``parity doctor``: each check names the injected fault, and is ok on the clean setup."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from parity.backends.onnxruntime.runner import OnnxRuntimeRunner
from parity.cli import main
from parity.doctor import (
    OK,
    PROBLEM,
    compare_pair,
    delegate_finding,
    diagnose_batchnorm,
    diagnose_calibration,
    diagnose_calibration_stats,
    diagnose_delegates,
    diagnose_port,
    diagnose_preprocessing,
)
from parity.faults import perturb_onnx_conv
from parity.harness import Session
from parity.preprocess import preprocess
from parity.variants import VARIANTS

MODEL = "mobilenet_v2"  # its exports and reference are the ones the rest of the suite makes
IMAGES = 4
BATCHNORMS = 52  # mobilenet_v2's BatchNorm2d count


@pytest.fixture(scope="module")
def session(local_session_for: Callable[[str], Session]) -> Session:
    return local_session_for(MODEL)  # the checks run torch and TF here, on purpose


@pytest.fixture(scope="module")
def shared(session_for: Callable[[str], Session]) -> Session:
    """The worker-backed session: the checks that need a variant's outputs or the Keras
    export read the ones the rest of the suite made (no torch module in this process)."""
    return session_for(MODEL)


@pytest.fixture(scope="module")
def paths(session: Session) -> list[Path]:
    return [f.path for f in session.fixtures[:IMAGES]]


def _user(session: Session, **changes: Any) -> Callable[[Path], np.ndarray]:
    spec = session.card.preprocess.replace(**changes)
    return lambda path: preprocess(path, spec)


def test_preprocessing_card_spec_is_a_clean_bill(session: Session, paths: list[Path]) -> None:
    def user(path: Path) -> np.ndarray:  # with a batch axis, as many pipelines return
        return preprocess(path, session.card.preprocess)[None]

    finding = diagnose_preprocessing(session.card, user, paths, session.model().module)
    assert finding.status == OK, finding.cause
    assert finding.evidence["max_abs_diff_vs_card"] == 0.0
    assert "drift" not in finding.evidence


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"channel_order": "BGR"}, "channel order BGR"),
        ({"resize_filter": "bicubic"}, "resize filter bicubic"),
        ({"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}, "normalisation 'tf'"),
        ({"layout": "NHWC"}, "layout NHWC"),
        ({"antialias": False}, "antialias off"),
    ],
    ids=["bgr", "bicubic", "tf-norm", "nhwc", "no-antialias"],
)
def test_preprocessing_names_the_single_difference(
    session: Session, paths: list[Path], changes: dict[str, Any], named: str
) -> None:
    finding = diagnose_preprocessing(
        session.card, _user(session, **changes), paths, session.model().module
    )
    assert finding.status == PROBLEM
    assert finding.evidence["best_candidate"] == named, finding.evidence
    assert finding.evidence["best_candidate_max_abs_diff"] < 1e-4
    assert named in finding.cause
    drift = finding.evidence["drift"]
    if changes.get("layout") == "NHWC":
        assert "NCHW" in drift
    else:
        assert drift["logits_max_abs_norm"] > 1e-3
        assert 0 <= drift["top1_flips"] <= IMAGES
    if changes.get("channel_order") == "BGR":  # BGR flips predictions, and the cause says so
        assert drift["top1_flips"] >= 1
        assert "top-1 flips" in finding.cause


def test_batchnorm_eval_model_is_ok(session: Session) -> None:
    finding = diagnose_batchnorm(session.model().module, session.batch[:IMAGES])
    assert finding.status == OK, finding.cause
    assert finding.evidence["alone_vs_in_batch_max_abs_norm"] < 1e-4


def test_batchnorm_train_mode_is_named(session: Session) -> None:
    module = session.model().module
    trained = copy.deepcopy(module).train()
    finding = diagnose_batchnorm(trained, session.batch[:IMAGES])
    assert finding.status == PROBLEM
    assert finding.evidence["batchnorm_in_train_mode"] == BATCHNORMS
    assert finding.evidence["alone_vs_in_batch_max_abs_norm"] > 1e-2
    assert "training mode" in finding.cause and "alone vs inside a batch" in finding.cause
    assert not module.training  # the session's module is untouched


@pytest.fixture(scope="module")
def twin_factory(session: Session) -> Callable[..., Any]:
    from parity import lazy
    from parity.export.keras import build_keras_twin

    lazy.tensorflow()
    state_dict = session.model().state_dict_numpy()

    def build(**options: Any) -> Any:
        twin = build_keras_twin(MODEL, state_dict, session.card.preprocess.input_hw, **options)
        return twin.model

    return build


def test_port_lint_clean_twin_is_ok(twin_factory: Callable[..., Any]) -> None:
    finding = diagnose_port(twin_factory())
    assert finding.status == OK, finding.cause
    assert finding.evidence["layers_checked"]["batchnorm"] == BATCHNORMS


def test_port_lint_names_bn_epsilon(twin_factory: Callable[..., Any]) -> None:
    finding = diagnose_port(twin_factory(bn_epsilon=1e-3))
    assert finding.status == PROBLEM
    assert len(finding.evidence["bn_epsilon_mismatch"]) == BATCHNORMS
    assert "epsilon" in finding.cause and "stride_2" not in finding.evidence


def test_port_lint_names_stride2_same_padding(twin_factory: Callable[..., Any]) -> None:
    finding = diagnose_port(twin_factory(stride2_padding="same"))
    assert finding.status == PROBLEM
    names = finding.evidence["stride2_same_padding"]
    stride2 = ["features.0.0", *(f"features.{i}.conv.1.0" for i in (2, 4, 7, 14))]
    assert [n.split(" ")[0] for n in names] == stride2, names
    assert "bn_epsilon_mismatch" not in finding.evidence
    assert "padding='same'" in finding.cause


def test_calibration_images_ok_noise_named(session: Session) -> None:
    images = session.context.calibration_batch()
    spec = session.card.preprocess
    clean = diagnose_calibration_stats(images, session.batch, spec)
    assert clean.status == OK, clean.cause
    assert clean.evidence["fraction_outside_attainable"] == 0.0
    noise = np.random.default_rng(0).standard_normal(images.shape, dtype=np.float32)
    noisy = diagnose_calibration_stats(noise, session.batch, spec)
    assert noisy.status == PROBLEM
    assert noisy.evidence["fraction_outside_attainable"] > 1e-2
    assert "noise" in noisy.cause


def test_cli_doctor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "doctor_user_bgr.py"
    module.write_text(
        "from parity.preprocess import preprocess\n"
        "from parity.zoo import get_card\n"
        "SPEC = get_card('mobilenet_v2').preprocess.replace(channel_order='BGR')\n"
        "def prep(path):\n"
        "    return preprocess(path, SPEC)\n"
    )
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "doctor.json"
    code = main(
        ["doctor", "-m", MODEL, "--check", "batchnorm", "--check", "preprocessing",
         "--preprocess", "doctor_user_bgr:prep", "--count", "2", "--json", str(out)]
    )  # fmt: skip  # one doctor worker for both checks
    assert code == 1  # the preprocessing problem; the batchnorm check is ok beside it
    findings = {f["name"]: f for f in json.loads(out.read_text())["findings"]}
    assert [(name, f["status"]) for name, f in findings.items()] == [
        ("batchnorm", OK),
        ("preprocessing", PROBLEM),
    ]
    assert findings["preprocessing"]["evidence"]["best_candidate"] == "channel order BGR"
    assert main(["doctor", "-m", MODEL, "--check", "nonsense"]) == 2


def test_delegates_ort_optimisation_is_ok(shared: Session) -> None:
    finding = diagnose_delegates(shared, pairs=[("ort_dynamo", "ort_dynamo_noopt")])
    assert finding.status == OK, finding.cause
    pair = finding.evidence["ort_dynamo vs ort_dynamo_noopt"]
    assert pair["first_divergent_tap"] is None
    assert pair["worst_max_abs_norm"] < 5e-4


@pytest.mark.onnxruntime
def test_delegates_names_first_divergent_tap(shared: Session, tmp_path: Path) -> None:
    """A real delegate pair whose second side computes one block wrong: ONNX Runtime with
    graph optimisation off, run on the dynamo export with one conv in features.7 perturbed
    (what a faulty kernel looks like), against the clean export optimised."""
    clean, _ = shared.outputs(VARIANTS["ort_dynamo"])
    broken = tmp_path / "broken.onnx"
    perturb_onnx_conv(shared.artifact(VARIANTS["ort_dynamo"]).path, broken, "features.7")
    with OnnxRuntimeRunner("ort_dynamo_noopt", broken, graph_optimization="disabled") as runner:
        faulty = runner.run(shared.batch, shared.taps)
    taps = [t.name for t in shared.taps]
    result = compare_pair("ort_dynamo", "ort_dynamo_noopt", taps, clean, faulty)
    finding = delegate_finding([result], 5e-4)
    assert finding.status == PROBLEM
    assert result["first_divergent_tap"] == "features.7"
    assert "first divergent tap 'features.7'" in finding.cause
    assert all(result["max_abs_norm"][tap] < 5e-4 for tap in taps[: taps.index("features.7")])


def test_calibration_int8_noise_named_with_worst_layers(shared: Session) -> None:
    finding = diagnose_calibration(shared, "noise")
    assert finding.status == PROBLEM, finding.cause
    worst = finding.evidence["worst_layers_db_lost"]
    assert worst and max(worst.values()) > 2.0
    assert "worst layers" in finding.cause and "noise" in finding.cause
    assert finding.evidence["stats_fraction_outside_attainable"] > 1e-2


def test_calibration_int8_images_ok(shared: Session) -> None:
    finding = diagnose_calibration(shared, "images")
    assert finding.status == OK, finding.cause
    assert finding.evidence["sqnr_db_images_calibration"]["logits"] > 10


def test_preprocessing_hand_written_pipeline_two_factors(
    session: Session, paths: list[Path]
) -> None:
    """A typical hand-rolled PIL pipeline: bicubic, [-1, 1], its own size rounding."""
    from PIL import Image

    def user(path: Path) -> np.ndarray:
        image = Image.open(path).convert("RGB")
        scale = 256 / min(image.size)
        image = image.resize(
            (round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC
        )
        left, top = (image.width - 224) // 2, (image.height - 224) // 2
        pixels = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32)
        return (pixels / 127.5 - 1.0).transpose(2, 0, 1)

    finding = diagnose_preprocessing(session.card, user, paths)
    assert finding.status == PROBLEM
    assert sorted(finding.evidence["factors"]) == [
        "normalisation 'tf'",
        "resize filter bicubic",
        "resized size rounded (round(w * scale)) where torchvision truncates (int)",
    ]
    assert finding.evidence["best_candidate_max_abs_diff"] <= finding.evidence["tolerance"]


@pytest.mark.torch
def test_doctor_as_a_pytest_fixture(parity_doctor):
    """The plugin's ``parity_doctor`` fixture runs the same checks in a user's tests."""
    (finding,) = parity_doctor(MODEL, ["batchnorm"])
    assert finding.name == "batchnorm" and finding.status == "ok", finding.cause
