"""``parity budgets`` writes budgets that load and can fail, however poor the measured floor."""

from __future__ import annotations

from pathlib import Path

import pytest

from parity.budgets import Floor, Measurement, rules_text
from parity.compare import TolerancePolicy


def floor(cosine: float, top1: float, sqnr_db: float = -0.5) -> Floor:
    return Floor(("litert_int8@2t",), 1.35, "features.17", cosine, sqnr_db, top1, top1)


@pytest.mark.parametrize(
    ("cosine", "top1", "expected_cosine"),
    [
        (0.998, 1.0, 0.994),  # the usual margin (3x the distance from 1)
        (0.45, 0.5625, 0.22),  # int8 on random weights: the margin would be -1, half the floor
        (0.01, 0.0625, None),  # a floor that says nothing: no cosine budget at all
    ],
)
def test_measured_budgets_load_and_can_fail(
    tmp_path: Path, cosine: float, top1: float, expected_cosine: float | None
):
    measured = Measurement("m", 16, "0" * 64, None, {"litert_int8": floor(cosine, top1)}, ())
    path = tmp_path / "tolerances.toml"
    path.write_text(rules_text(measured))
    policy = TolerancePolicy.load(path)  # the schema refuses budgets that cannot fail
    limits = policy.budget("m", "litert_int8", "features.3").limits
    assert limits.get("min_cosine") == expected_cosine
    logits = policy.budget("m", "litert_int8_io", "logits").limits
    if top1 - 1 / 16 > 0:
        assert logits["min_top1_agreement"] == pytest.approx(top1 - 1 / 16, abs=1e-4)
    else:
        assert "min_top1_agreement" not in logits
