"""The doctor on user-written pipelines (tests/doctor_corpus.py): each fault named
exactly (every factor of a combination, nothing else), each clean control clean, and a
difference no factor models reported as unexplained, never with a label."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
from doctor_corpus import PHOTOS, UNEXPLAINED, Case, cases, named_exactly, tf_cases

from parity.doctor import OK, PROBLEM, diagnose_preprocessing
from parity.zoo import get_card

CARD = get_card("resnet18")
CASES = {case.name: case for case in cases()}
#: Checked by default: one or two of each kind of fault (colour, range, layout, geometry,
#: filter, decoding) and the clean controls; the whole corpus runs under ``-m heavy`` and
#: in ``bench/doctor_corpus.py``, which owns the corpus score.
DEFAULT_CASES = {
    "bgr", "bicubic-transform", "caffe-mode", "channels-last", "nearest-pil", "no-exif",
    "squash-224", "tf-mode", "torch-interpolate", "control-bgr-converted-back",
    "control-float64", "control-pil-numpy", "control-torchvision-v2",
    "control-keras-normalization-layer", "keras-preprocess-input",
}  # fmt: skip


def by_default(names: Iterable[str]) -> list[Any]:
    """``names`` as parameters, those outside :data:`DEFAULT_CASES` marked heavy."""
    return [n if n in DEFAULT_CASES else pytest.param(n, marks=pytest.mark.heavy) for n in names]


TF_NAMES = (
    "control-keras-normalization-layer",
    "tf-image-resize-tf-crop",
    "tf-per-image-standardization",
    "keras-preprocess-input",
    "keras-resizing-layer",
    "tf-data-map",
)


def test_default_cases_are_corpus_cases() -> None:
    assert set(CASES).isdisjoint(TF_NAMES)
    assert not DEFAULT_CASES - set(CASES) - set(TF_NAMES)


def _assert_diagnosed(case: Case) -> None:
    finding = diagnose_preprocessing(CARD, case.pipeline, case.images)
    if not case.expected:
        assert finding.status == OK, finding.cause
        return
    assert finding.status == PROBLEM
    factors = finding.evidence.get("factors", [])
    assert named_exactly(factors, case.expected), (case.expected, finding.cause)
    assert finding.fix and all(fix for fix in finding.evidence["fixes"])
    assert finding.evidence["best_candidate_max_abs_diff"] <= finding.evidence["tolerance"]


@pytest.mark.torch
@pytest.mark.parametrize("name", by_default(CASES))
def test_corpus_case_is_named_exactly(name: str) -> None:
    _assert_diagnosed(CASES[name])


@pytest.fixture(scope="module")
def tf_corpus() -> dict[str, Case]:
    found = {case.name: case for case in tf_cases()}
    assert tuple(found) == TF_NAMES
    return found


@pytest.mark.keras
@pytest.mark.parametrize("name", by_default(TF_NAMES))
def test_tf_corpus_case_is_named_exactly(tf_corpus: dict[str, Case], name: str) -> None:
    _assert_diagnosed(tf_corpus[name])


@pytest.mark.parametrize(("name", "pipeline"), UNEXPLAINED, ids=[n for n, _ in UNEXPLAINED])
def test_unmodelled_difference_is_unexplained(name: str, pipeline: Callable[..., object]) -> None:
    # Three photos: an unexplained difference makes the search try every candidate, whose
    # cost grows with the images (7 photos: 56 s of the default tier); none of them makes
    # JPEG re-encoding explainable (bench/doctor_corpus.py scores the whole set).
    finding = diagnose_preprocessing(CARD, pipeline, PHOTOS[:3])
    assert finding.status == PROBLEM
    assert finding.cause.startswith("unexplained:"), finding.cause
    assert "factors" not in finding.evidence and "best_candidate" not in finding.evidence
    assert "card spec" not in finding.cause and "e.g." not in finding.cause
    stats = finding.evidence["user_channel_stats"]
    assert set(stats) == {"mean", "std", "min", "max"} and len(stats["mean"]) == 3
    assert "card_channel_stats" in finding.evidence


@pytest.mark.heavy
def test_partly_explained_reports_the_residual() -> None:
    """BGR plus JPEG re-encoding: BGR is named, the rest is an unexplained residual."""
    pipeline = dict(UNEXPLAINED)["jpeg-q30"]

    def bgr_jpeg(path: object) -> object:
        return pipeline(path)[::-1].copy()  # type: ignore[index, operator]

    finding = diagnose_preprocessing(CARD, bgr_jpeg, PHOTOS)
    assert finding.status == PROBLEM and finding.cause.startswith("unexplained:")
    partial = finding.evidence["partial"]
    assert partial["factors"] == ["channel order BGR"]
    assert partial["explains_fraction_of_mean_abs_diff"] > 0.5
    assert partial["max_abs_diff"] > finding.evidence.get("tolerance", 0.01)
    assert "unexplained residual max abs" in finding.cause
    assert "channel order BGR" in finding.cause
