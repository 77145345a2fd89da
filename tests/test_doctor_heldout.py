"""The doctor on held-out pipelines (tests/doctor_heldout.py), each check on the user's
own object: severity judged by the model (a 1-step difference on 0.1% of the values is
ok, floored pixels are not), the wider search (resize 232, mean/std units, H/W swap,
letterbox, squash then crop), the input form detected before the call, and precision on
a ``--model-object``. The whole set is scored by bench/doctor_heldout.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from doctor_corpus import named_exactly
from doctor_heldout import HeldOut, heldout_cases

from parity.doctor import OK, PROBLEM, diagnose_preprocessing
from parity.doctor.effect import ModelJudge
from parity.doctor.inputs import as_path_function
from parity.doctor.registry import CHECKS, DoctorInputs
from parity.local import LocalSession

pytestmark = pytest.mark.torch

MODEL = "mobilenet_v2"
CASES = {case.name: case for case in heldout_cases(with_tf=False)}


def _diagnose(session: LocalSession, case: HeldOut, with_model: bool = True) -> Any:
    if not with_model:
        return diagnose_preprocessing(session.card, case.obj, case.images)
    judge = ModelJudge(session.model().module, session.taps, session.policy, MODEL, False)
    return diagnose_preprocessing(session.card, case.obj, case.images, judge=judge)


def test_one_step_on_a_tenth_of_a_percent_is_ok_by_its_effect(local_session_for: Any) -> None:
    """decode_image + v2 on uint8 differs by 1 step on ~0.1% of the values: ok."""
    finding = _diagnose(local_session_for(MODEL), CASES["tv2-decode-image-uint8"])
    assert finding.status == OK, finding.cause
    assert finding.cause.startswith("ok (differs by <=1 LSB on 0.1"), finding.cause
    assert finding.evidence["effect_vs_card"]["within_budgets"] is True
    assert finding.evidence["effect_vs_card"]["top1_flips_count"] is False  # untrained


def test_floored_pixels_move_the_model_more_than_rounding(local_session_for: Any) -> None:
    """A float resize cast with astype(uint8) differs by 1 step too, on half the values."""
    finding = _diagnose(local_session_for(MODEL), CASES["pil-float-truncated"])
    assert finding.status == PROBLEM, finding.cause
    assert named_exactly(finding.evidence["factors"], ("truncated",)), finding.cause
    assert "first over budget at" in finding.cause
    assert "top-1 flips not counted" in finding.cause or "flips" not in finding.cause


@pytest.mark.parametrize(
    ("name", "with_model"),
    [
        ("tv2-resize-232-crop-224", True),  # v2 on uint8 leaves 1 step on 0.1%: judged
        ("numpy-mean-std-255-on-0-1", False),
        ("tv2-permute-hw-swapped", False),
        pytest.param("pil-letterbox", False, marks=pytest.mark.heavy),
        pytest.param("cv2-like-numpy", True, marks=pytest.mark.heavy),
    ],
)
def test_wider_search_names_the_factor(local_session_for: Any, name: str, with_model: bool) -> None:
    case = CASES[name]
    finding = _diagnose(local_session_for(MODEL), case, with_model)
    assert finding.status == PROBLEM
    assert named_exactly(finding.evidence["factors"], case.expected), finding.cause


def test_numpy_preprocess_input_is_given_resized_pixels(local_session_for: Any) -> None:
    """numpy arithmetic works on a PIL image: the form is told by the output's size."""
    case = CASES["numpy-preprocess-input"]
    session = local_session_for(MODEL)
    _, form = as_path_function(case.obj, session.card.preprocess, list(case.images))
    assert form.startswith("array -> array (card-resized pixels)"), form
    assert "output follows the image size" in form
    finding = _diagnose(session, case, with_model=False)
    assert named_exactly(finding.evidence["factors"], case.expected), finding.cause


@pytest.mark.parametrize(
    ("name", "status"),
    [
        ("model-autocast-bf16", PROBLEM),
        ("model-bf16-weights", PROBLEM),
        ("model-channels-last", OK),
    ],
)
def test_precision_on_the_model_object(local_session_for: Any, name: str, status: str) -> None:
    case = CASES[name]
    builder: Callable[[], Any] = case.obj
    finding = CHECKS["precision"].run(
        local_session_for(MODEL), DoctorInputs(model=builder(), count=2)
    )
    assert finding.status == status, finding.cause
    assert all(e in finding.cause for e in case.expected), finding.cause
    if status == OK:
        assert "channels_last memory format" in finding.cause


@pytest.mark.keras
@pytest.mark.heavy
@pytest.mark.parametrize(
    "name", ["tf-image-antialias", "tf-squash-central-crop", "tf-data-resize-with-pad"]
)
def test_tf_pipelines_keep_floats_and_are_named(local_session_for: Any, name: str) -> None:
    """tf.image.resize keeps floats: not a fault; letterbox sized in float32 as TF does."""
    case = {c.name: c for c in heldout_cases(with_tf=True)}[name]
    finding = _diagnose(local_session_for(MODEL), case)
    if not case.expected:
        assert finding.status == OK, finding.cause
        return
    assert named_exactly(finding.evidence["factors"], case.expected), finding.cause
