"""Metrics and the tolerance policy (numpy only)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from parity.compare import compare_taps, judge, tap_metrics
from parity.errors import ToleranceError
from parity.paths import fixtures_dir
from parity.taps import Tap
from parity.tolerances import BudgetRule, TolerancePolicy


def test_metrics_are_relative_to_each_images_scale():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((2, 8, 4, 4)).astype(np.float32)
    ref[1] *= 1e-4  # a tiny-scale image must not hide its error behind the big one
    got = ref.copy()
    got[1, 0, 0, 0] += 1e-5
    m = tap_metrics(ref, got)
    assert m.worst_image == 1
    assert m.max_abs == pytest.approx(1e-5, rel=1e-3)
    assert m.max_abs_norm == pytest.approx(1e-5 / np.abs(ref[1]).max(), rel=1e-3)
    assert m.cosine < 1.0 and np.isfinite(m.sqnr_db)


def test_identical_tensors():
    ref = np.ones((3, 10), np.float32)
    m = tap_metrics(ref, ref.copy(), logits=True)
    assert m.max_abs == 0 and m.cosine == pytest.approx(1.0, abs=1e-12) and m.sqnr_db == np.inf
    assert m.top1_agreement == 1.0 and m.top5_overlap == 1.0


def test_sqnr_and_cosine_values():
    ref = np.array([[3.0, 4.0]])
    got = np.array([[3.0, 4.5]])
    m = tap_metrics(ref, got)
    assert m.sqnr_db == pytest.approx(10 * np.log10(25 / 0.25))
    assert m.cosine == pytest.approx((9 + 18) / (5 * np.hypot(3, 4.5)))
    assert m.rmse == pytest.approx(np.sqrt(0.25 / 2))


def test_max_rel_is_guarded_near_zero():
    ref = np.array([[10.0, 0.0]])
    got = np.array([[10.0, 1e-6]])
    assert tap_metrics(ref, got).max_rel == pytest.approx(1e-6 / (1e-3 * 10))


def test_top1_and_top5():
    ref = np.array([[9, 8, 7, 6, 5, 4, 0.0], [1, 2, 3, 4, 5, 6, 7.0]])
    got = ref.copy()
    got[0, 1] = 10  # image 0: argmax moves, top-5 set unchanged
    got[1, 0] = 100  # image 1: argmax moves, class 0 enters top-5
    m = tap_metrics(ref, got, logits=True)
    assert m.top1_agreement == 0.0
    assert m.top5_overlap == pytest.approx((5 / 5 + 4 / 5) / 2)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="does not match"):
        tap_metrics(np.zeros((1, 3)), np.zeros((1, 4)))


def test_most_specific_rule_wins_metric_by_metric():
    policy = TolerancePolicy(
        [
            BudgetRule("*/*/*", {"max_abs_norm": 1e-4, "min_cosine": 0.999}),
            BudgetRule("*/ort_dynamo/*", {"max_abs_norm": 1e-2}),
            BudgetRule("mobilenet_v2/*/*", {"max_abs_norm": 5e-4}),
            BudgetRule("*/*/logits", {"min_top1_agreement": 1.0}),
        ]
    )
    budget = policy.budget("mobilenet_v2", "ort_dynamo", "logits")
    assert budget.limits == {"max_abs_norm": 1e-2, "min_cosine": 0.999, "min_top1_agreement": 1.0}
    assert budget.sources["max_abs_norm"] == "*/ort_dynamo/*"  # variant beats model
    assert policy.budget("mobilenet_v2", "ort_torchscript", "stem").limits["max_abs_norm"] == 5e-4
    assert policy.budget("resnet18", "ort_torchscript", "stem").limits["max_abs_norm"] == 1e-4


def test_rules_are_selected_by_precision_class():
    """An fp32 default never judges a bf16 run, and no rule pools two classes unasked."""
    policy = TolerancePolicy(
        [
            BudgetRule("*/*/*", {"max_abs_norm": 1e-4, "min_cosine": 0.999}),
            BudgetRule("m/*/*", {"max_abs_norm": 0.08}, precision=("bf16",)),
            BudgetRule("m/litert_fp16*/*", {"max_abs_norm": 0.2}),
        ]
    )
    assert policy.budget("m", "ort_dynamo", "t").limits == {
        "max_abs_norm": 1e-4,
        "min_cosine": 0.999,
    }
    assert policy.budget("m", "openvino_bf16", "t").limits == {"max_abs_norm": 0.08}
    assert policy.budget("m", "torch_cpu_bf16", "t").sources == {"max_abs_norm": "m/*/*"}
    assert policy.budget("m", "litert_fp16", "t").limits == {"max_abs_norm": 0.2}
    # A class with no rule: every tap fails, naming the command that measures one.
    missing = policy.budget("other", "openvino_bf16", "t")
    ref = np.ones((1, 4))
    assert judge(tap_metrics(ref, ref), missing) == (missing.missing,)
    assert "no bf16-class budget for other/openvino_bf16" in missing.missing
    with pytest.raises(ToleranceError, match="several precision classes"):
        _ = BudgetRule("m/openvino_*/*", {"max_abs_norm": 1.0}).classes
    both = BudgetRule("m/openvino_*/*", {"max_abs_norm": 1.0}, precision=("bf16", "fp16"))
    assert both.classes == {"bf16", "fp16"}


def test_judge_names_the_broken_budget():
    ref = np.array([[1.0, 2.0]])
    m = tap_metrics(ref, ref + 0.1)
    policy = TolerancePolicy([BudgetRule("*/*/*", {"max_abs_norm": 1e-3, "min_cosine": 0.5})])
    failures = judge(m, policy.budget("m", "v", "t"))
    assert failures == ("max_abs_norm 0.05 > 0.001",)


def test_first_failure_is_first_in_forward_order():
    taps = [Tap("a", "a"), Tap("b", "b"), Tap("c", "c")]
    ref = {t.name: np.ones((1, 4)) for t in taps}
    got = {"a": ref["a"], "b": ref["b"] * 1.1, "c": ref["c"] * 2}
    policy = TolerancePolicy([BudgetRule("*/*/*", {"max_abs_norm": 1e-3})])
    verdict = compare_taps("m", "v", taps, ref, got, policy)
    assert [t.passed for t in verdict.taps] == [True, False, False]
    assert verdict.first_failure is not None and verdict.first_failure.tap.name == "b"
    assert "first divergent tap 'b'" in verdict.explain()


def test_bundled_tolerances_load_and_cover_everything():
    policy = TolerancePolicy.load(fixtures_dir() / "tolerances.toml")
    assert policy.budget("anything", "anything", "anything").limits["max_abs_norm"] > 0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[budget."*/*"]\nmax_abs_norm = 1', "model/variant/tap"),
        ('[budget."*/*/*"]\nmax_abs = 1', "unknown key 'max_abs'"),
        ("not toml ===", "not valid TOML"),
        ("[other]\nx = 1", "unknown key 'other'"),
    ],
)
def test_bad_tolerance_files(tmp_path: Path, text: str, message: str):
    path = tmp_path / "tolerances.toml"
    path.write_text(text)
    with pytest.raises(ToleranceError, match=message):
        TolerancePolicy.load(path)


def test_no_matching_rule_is_an_error():
    policy = TolerancePolicy([BudgetRule("resnet18/*/*", {"max_abs_norm": 1.0})])
    with pytest.raises(ToleranceError, match="no budget matches mobilenet_v2/v/t"):
        policy.budget("mobilenet_v2", "v", "t")
