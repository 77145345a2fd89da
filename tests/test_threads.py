"""Thread budgets: workers x threads never exceed the cores parity is given (PARITY_CORES)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from deferred import deferred

from parity.errors import ParityError
from parity.threads import available_cores, threads
from parity.workers import default_jobs, threads_per_worker

torch = deferred("torch")

EXAMPLE = Path(__file__).parent / "data" / "backend_example"


@pytest.mark.parametrize(
    ("cores", "jobs", "asked", "expected"),
    [("2", 1, 2, 2), ("2", 2, 2, 1), ("2", 3, 2, 1), ("16", 2, 4, 4), ("16", 2, 16, 8)],
)
def test_workers_times_threads_fit_the_cores(
    monkeypatch: pytest.MonkeyPatch, cores: str, jobs: int, asked: int, expected: int
):
    monkeypatch.setenv("PARITY_CORES", cores)
    assert threads_per_worker(jobs, asked) == expected
    assert jobs * expected <= max(int(cores), jobs)  # at least one thread each


def test_parity_cores_sets_the_default_jobs(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PARITY_CORES", "3")
    assert available_cores() == default_jobs() == 3
    monkeypatch.delenv("PARITY_CORES")
    assert default_jobs() == len(os.sched_getaffinity(0))
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("PARITY_CORES", bad)
        with pytest.raises(ParityError, match="PARITY_CORES"):
            default_jobs()


@pytest.mark.onnxruntime
def test_parity_cores_is_what_a_worker_runs_with(tmp_path: Path):
    """Seen from inside the worker: the ONNX Runtime session's intra-op threads (logged by
    the example backend's runner) follow PARITY_CORES, not the machine's core count."""
    machine = len(os.sched_getaffinity(0))
    given = machine - 1 if machine > 1 else 2  # differs from the machine either way
    log = tmp_path / "threads.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(EXAMPLE), *sys.path]),
        "PARITY_CORES": str(given),
        "PARITY_EXAMPLE_THREADS_LOG": str(log),
    }
    argv = [sys.executable, "-m", "parity.cli", "run", "-q", "-r", "ort_single"]
    argv += ["--jobs", "1", "--threads", "64"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(log.read_text().split()) == {str(given)}


@pytest.mark.torch
def test_threads_sets_and_restores_torchs_count():
    before = torch.get_num_threads()
    with threads(torch, 1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
