"""Temporary folders a killed process leaves are removed by the next one, never a living
process's (parity/scratch.py): the owner lock, not a pid, says who is alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parity.runfiles import FAULT_ENV
from parity.scratch import OWNER, remove_orphans

HOLD = (
    "import fcntl, sys\n"
    "handle = open(sys.argv[1], 'w')\n"
    "fcntl.flock(handle, fcntl.LOCK_EX)\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
)


def test_only_folders_whose_owner_died_are_removed(tmp_path: Path) -> None:
    """A SIGKILLed owner's folder goes; a living owner's, one without a lock file (an older
    parity's, or not locked yet) and other names stay."""
    names = ("parity-ray-live", "parity-ray-dead", "parity-ray-unlocked", "parity-eval-dead")
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.onnx").write_bytes(b"x" * 1000)
    owners = {}
    for name in ("parity-ray-live", "parity-ray-dead", "parity-eval-dead"):
        owners[name] = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(tmp_path / name / OWNER)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert owners[name].stdout.readline() == "locked\n"  # type: ignore[union-attr]
    for name in ("parity-ray-dead", "parity-eval-dead"):
        owners[name].kill()  # SIGKILL: no finalizer runs, the kernel drops the lock
        owners[name].wait()
    old = time.time() - 3600
    os.utime(tmp_path / "parity-ray-unlocked", (old, old))
    try:
        removed = remove_orphans(tmp_path, "parity-ray-")
    finally:
        owners["parity-ray-live"].communicate("")
    assert [p.name for p in removed] == ["parity-ray-dead"]
    left = ["parity-eval-dead", "parity-ray-live", "parity-ray-unlocked"]
    assert sorted(p.name for p in tmp_path.iterdir()) == left


@pytest.mark.onnxruntime
def test_a_killed_runs_folder_is_removed_by_the_next_run(tmp_path: Path) -> None:
    """``parity run`` SIGKILLed while its worker hangs leaves its run directory (its taps);
    the next run removes it and its own, and passes."""
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    env = dict(os.environ, TMPDIR=str(temporary))
    command = [sys.executable, "-m", "parity.cli", "run", "-q", "-r", "ort_dynamo"]
    hanging = subprocess.Popen(
        command, env={**env, FAULT_ENV: "ort_dynamo:reading:hang"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not any(temporary.glob("parity-run-*/phases.*.log")):
        assert hanging.poll() is None and time.monotonic() < deadline, "no worker started"
        time.sleep(0.1)
    hanging.send_signal(signal.SIGKILL)
    hanging.wait()
    (left,) = temporary.glob("parity-run-*")
    assert (left / OWNER).is_file()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not list(temporary.glob("parity-*")), list(temporary.iterdir())
