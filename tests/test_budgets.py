"""``parity budgets``: per-class budgets that load, can fail, never pool precision classes,
and cannot be made loose enough to pass a real fault without ``--allow-loose``."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from parity.budgets import LooseBudget, Measurement, Run, measure, rules_text, write_rules
from parity.compare import TapMetrics, compare_taps
from parity.errors import ToleranceError
from parity.harness import Session
from parity.tolerances import TolerancePolicy

TAPS = ("stem", "features.17", "logits")


def metrics(error: float, cosine: float, top1: float | None = None) -> TapMetrics:
    sqnr = -10 * np.log10(max(1 - cosine, 1e-30))
    return TapMetrics(error, error, error, error, error, cosine, float(sqnr), 1.0, 0,
                      top1, top1)  # fmt: skip


def run(variant: str, threads: int, error: float, cosine: float, top1: float = 1.0) -> Run:
    taps = {tap: metrics(error, cosine, top1 if tap == "logits" else None) for tap in TAPS}
    return Run(f"{variant}@{threads}t", variant, taps)


def measured(**runs: list[Run]) -> Measurement:
    return Measurement("m", 16, "0" * 64, TAPS, dict(runs))


def load(tmp_path: Path, text: str) -> TolerancePolicy:
    path = tmp_path / "tolerances.toml"
    path.write_text('extends = "bundled"\n' + text)
    return TolerancePolicy.load(path)  # the schema refuses budgets that cannot fail


@pytest.mark.parametrize(
    ("cosine", "top1", "expected_cosine"),
    [
        (0.998, 1.0, 0.995),  # the usual margin (2.5x the distance from 1)
        (0.45, 0.5625, 0.22),  # int8 on random weights: the margin would be -1, half the floor
        (0.01, 0.0625, None),  # a floor that says nothing: no cosine budget at all
    ],
)
def test_measured_budgets_load_and_can_fail(
    tmp_path: Path, cosine: float, top1: float, expected_cosine: float | None
):
    int8 = [run("litert_int8", 2, 1.35, cosine, top1), run("litert_int8_io", 2, 1.35, cosine, top1)]
    policy = load(tmp_path, rules_text(measured(int8=int8)))
    limits = policy.budget("m", "litert_int8", "features.17").limits
    assert limits.get("min_cosine") == expected_cosine
    logits = policy.budget("m", "litert_int8_io", "logits").limits
    if top1 - 1 / 16 > 0:
        assert logits["min_top1_agreement"] == pytest.approx(top1 - 1 / 16, abs=1e-4)
    else:
        assert "min_top1_agreement" not in logits


def test_classes_are_never_pooled(tmp_path: Path):
    """The bf16 run's error (20,000x the fp32 floor) never reaches an fp32 budget."""
    fp32 = [run(v, t, 4e-6, 1 - 1e-12) for v in ("openvino_onnx", "openvino_f32") for t in (1, 2)]
    bf16 = [run("openvino_bf16", 2, 0.08, 0.99, top1=0.875)]
    policy = load(tmp_path, rules_text(measured(fp32=fp32, bf16=bf16)))
    for variant in ("openvino_onnx", "openvino_f32"):
        budget = policy.budget("m", variant, "features.17")
        assert budget.limits["max_abs_norm"] == 2e-5 and budget.precision == "fp32"
        assert budget.sources["max_abs_norm"] == "m/*/features.17"
        assert policy.budget("m", variant, "logits").limits["min_top1_agreement"] == 1.0
    bf16_budget = policy.budget("m", "openvino_bf16", "features.17")
    assert bf16_budget.limits["max_abs_norm"] == 0.2
    assert bf16_budget.sources["max_abs_norm"] == "m/openvino_bf16/features.17"
    # A variant nobody measured keeps the bundled budgets: no measured rule judges it.
    assert policy.budget("m", "ort_dynamo", "features.17").sources["max_abs_norm"] == "*/*/*"
    assert "no bf16-class budget" in policy.budget("m", "torch_cpu_bf16", "stem").missing


def test_an_fp32_budget_far_above_the_floor_is_refused(tmp_path: Path):
    """One variant 1000x off the others (a bf16 execution in an fp32 variant): exit 2."""
    fp32 = [run(v, t, 4e-6, 1 - 1e-12) for v in ("openvino_onnx", "ort_dynamo") for t in (1, 2)]
    fp32 += [run("openvino_f32", t, 8e-3, 0.9999) for t in (1, 2)]
    with pytest.raises(LooseBudget, match=r"m/stem would be 4e-02.*openvino_f32.*--allow-loose"):
        rules_text(measured(fp32=fp32))
    # Alone, it is over the fp32 ceiling (1e-2: not rounding noise).
    with pytest.raises(LooseBudget, match="at most 0.01"):
        rules_text(measured(fp32=fp32[-2:]))
    # A cosine no fp32 computation gives (its budget would be <= 0): refused as well.
    with pytest.raises(LooseBudget):
        rules_text(measured(fp32=[run("ort_dynamo", 1, 1e-6, 0.5)]))
    text = rules_text(measured(fp32=fp32), allow_loose=True)
    assert "LOOSE: written with --allow-loose" in text
    assert load(tmp_path, text).budget("m", "ort_dynamo", "stem").limits["max_abs_norm"] == 4e-2


@pytest.mark.parametrize("cosine", [1.0, 1 - 1e-9, 0.9, 0.0, -0.5])
@pytest.mark.parametrize("error", [0.0, 1e-9, 3e-4, 0.7, 5.0])
def test_every_written_value_is_valid(tmp_path: Path, error: float, cosine: float):
    """Whatever another class measured, its rules load (no ``min_cosine = -6``)."""
    runs = {
        "fp32": [run("ort_dynamo", 1, error * 1e-4, 1 - 1e-9)],
        "bf16": [run("openvino_bf16", 2, error, cosine, top1=0.5)],
        "int8": [run("litert_int8", 2, error, cosine, top1=0.0)],
    }
    load(tmp_path, rules_text(measured(**runs)))


def test_write_rules_refuses_a_file_it_cannot_parse(tmp_path: Path):
    path = tmp_path / "tolerances.toml"
    path.write_text("[budget.\nnot toml ===")
    with pytest.raises(ToleranceError, match="not valid TOML"):
        write_rules(path, "m", rules_text(measured(fp32=[run("ort_dynamo", 1, 1e-6, 1.0)])))
    assert path.read_text() == "[budget.\nnot toml ==="  # untouched
    with pytest.raises(ToleranceError, match="is a directory"):
        write_rules(tmp_path, "m", "")
    text = rules_text(measured(fp32=[run("ort_dynamo", 1, 1e-6, 1.0)]))
    fresh = tmp_path / "new" / "tolerances.toml"
    write_rules(fresh, "m", text)
    write_rules(fresh, "m", text)  # a second measurement replaces the first
    assert fresh.read_text().count('[budget."m/*/stem"]') == 1
    assert list(fresh.parent.iterdir()) == [fresh]  # no temporary left behind


@pytest.mark.heavy
@pytest.mark.torch
@pytest.mark.openvino
def test_no_budgets_invocation_passes_a_broken_conv(
    session_for: Callable[[str], Session], tmp_path: Path
):
    """``budgets -r openvino -r torch_cpu_bf16`` (workers; openvino_bf16 in play), then a 1%-noise
    conv in features.5 read by OpenVINO: fails at features.5 under the written budgets, and
    under those of every subset of what was measured (every other invocation), unless refused.
    """
    from parity.backends.openvino.runner import OpenVINORunner
    from parity.faults import perturb_onnx_conv
    from parity.variants import VARIANTS

    model, target = "mobilenet_v2", "features.5"
    frameworks = {"torch", "openvino", "tensorflow"}
    before = frameworks & set(sys.modules)
    measurement = measure(model, ["openvino", "torch_cpu_bf16"])
    assert frameworks & set(sys.modules) == before  # measured in workers, not here
    assert not measurement.failed and set(measurement.runs) == {"fp32", "bf16", "fp16"}
    assert {r.variant for r in measurement.runs["bf16"]} == {"openvino_bf16", "torch_cpu_bf16"}
    assert "openvino_bf16" in measurement.executed
    path = tmp_path / "tolerances.toml"
    write_rules(path, model, rules_text(measurement))

    session = session_for(model)
    broken = tmp_path / "broken.onnx"
    artifact = session.artifact(VARIANTS["openvino_onnx"])
    perturb_onnx_conv(artifact.path, broken, module=target)
    tap_values = artifact.metadata["runner_options"]["tap_values"]
    with OpenVINORunner("openvino_onnx", broken, tap_values=tap_values) as runner:
        obtained = runner.run(session.batch, session.taps)

    def first_failure(policy: TolerancePolicy) -> str | None:
        verdict = compare_taps(model, "openvino_onnx", session.taps, session.reference, obtained,
                               policy)  # fmt: skip
        return None if verdict.first_failure is None else verdict.first_failure.tap.name

    assert first_failure(TolerancePolicy.load(path)) == target
    runs = [(precision, r) for precision, rs in measurement.runs.items() for r in rs]
    refused = 0
    for size in range(1, len(runs) + 1):
        for subset in itertools.combinations(runs, size):
            part: dict[str, list[Run]] = {}
            for precision, r in subset:
                part.setdefault(precision, []).append(r)
            try:
                text = rules_text(Measurement(model, 16, "0" * 64, measurement.taps, part))
            except LooseBudget:
                refused += 1
                continue
            assert first_failure(load(tmp_path, text)) == target, [r.name for _, r in subset]
    # The bf16 runs passed off as fp32 (what pooling did) are refused, alone or with others.
    for subset in ([r for _, r in runs if "bf16" in r.variant],):
        with pytest.raises(LooseBudget):
            rules_text(Measurement(model, 16, "0" * 64, measurement.taps, {"fp32": subset}))


def test_a_quantised_cosine_budget_near_one_stays_under_the_measured_floor():
    from parity.budgets import _quantised_cosine

    (line,) = _quantised_cosine(0.99999984)  # fp16 stem of mobilenet_v3_small (litert-torch)
    assert 0.9999990 < float(line.split("=")[1].split("#")[0]) < 0.99999984
