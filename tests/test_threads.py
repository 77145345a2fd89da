"""Thread budgets: workers x threads never exceed the cores parity is given."""

from __future__ import annotations

import pytest

from parity.threads import available_cores, per_worker, threads


@pytest.mark.parametrize(
    ("workers", "cores", "expected"), [(1, 2, 2), (2, 2, 1), (3, 2, 1), (2, 16, 8)]
)
def test_workers_times_threads_fit_the_cores(workers: int, cores: int, expected: int):
    assert per_worker(workers, cores) == expected
    assert workers * expected <= max(cores, workers)  # at least one thread each


def test_parity_cores_limits_what_parity_uses(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PARITY_CORES", "1")
    assert available_cores() == 1 and per_worker(1) == 1
    monkeypatch.delenv("PARITY_CORES")
    assert available_cores() >= 1


@pytest.mark.torch
def test_threads_sets_and_restores_torchs_count():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    with threads(torch, 1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
