"""Workers forked from a pre-imported server (parity/forkserver.py): the numbers of fresh
workers, bitwise; a server per worker environment; a crash or a kill still a result."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from parity import forkserver, worker_server
from parity.cli import main
from parity.errors import ParityError


def _floats(report: Path) -> dict[str, float]:
    """Every number of a JSON report's variants but the timings, by path."""
    found: dict[str, float] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}/{key}")
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")
        elif isinstance(value, float) and "seconds" not in path:
            found[path] = value

    walk(json.loads(report.read_text())["variants"], "")
    return found


def _live_preloads() -> set[tuple[str, ...]]:
    return {key[3] for key, s in forkserver._SERVERS.items() if s.usable()}


@pytest.mark.torch
@pytest.mark.keras
def test_forked_workers_give_bitwise_the_numbers_of_fresh_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # One thread: a fresh TF worker sets its thread count as it imports TF; a forked one
    # (TF imported by the server) must still set it, or Keras' sums run on two threads.
    # ONNX Runtime's worker: forked from the server of no preload.
    variants = ["-r", "torch_cpu_bf16", "-r", "keras", "-r", "ort_dynamo"]
    argv = ["run", "-q", *variants, "--threads", "1", "--json"]
    forking = os.environ.get(forkserver.SWITCH, "process")  # the suite's: shared
    monkeypatch.setenv(forkserver.SWITCH, "0")
    assert forkserver.server(("torch",), dict(os.environ)) is None  # every worker fresh
    assert main([*argv, str(tmp_path / "fresh.json")]) == 0
    monkeypatch.setenv(forkserver.SWITCH, forking)
    assert main([*argv, str(tmp_path / "forked.json")]) == 0
    assert {("torch",), ("tensorflow", "keras"), ()} <= _live_preloads()
    capsys.readouterr()
    fresh, forked = _floats(tmp_path / "fresh.json"), _floats(tmp_path / "forked.json")
    assert len(fresh) > 100 and fresh == forked


@pytest.fixture(params=["process", "shared"])
def fork_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Servers of this process (the default), or shared by every process (the suite's)."""
    monkeypatch.setenv(forkserver.SWITCH, request.param)
    return str(request.param)


def _environment() -> dict[str, str]:
    return dict(os.environ, PYTHONHASHSEED="0")


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_server_serves_only_the_environment_it_was_started_with(fork_mode: str) -> None:
    env = _environment()
    first = forkserver.server(("numpy",), env)
    assert first is not None
    # read after the imports (the test's name, parity's own settings): the same server
    same = {**env, "PYTEST_CURRENT_TEST": "other", "PARITY_CACHE_DIR": "/elsewhere"}
    assert forkserver.server(("numpy",), same) is first
    # a variable torch reads as it loads: another server
    capped = forkserver.server(("numpy",), {**env, "ATEN_CPU_CAPABILITY": "default"})
    assert capped is not None and capped is not first
    forkserver.stop_all()


def _hung_worker(folder: Path) -> forkserver.ForkedWorker:
    """A forked worker that waits for ever: its job file is a FIFO nobody writes to."""
    fifo = folder / "never"
    if not fifo.exists():
        os.mkfifo(fifo)
    with (folder / "stderr.log").open("ab") as stderr:
        started = forkserver.start(
            ["-m", "parity.worker", str(fifo)], _environment(), stderr, ("numpy",)
        )
    assert isinstance(started, forkserver.ForkedWorker)
    return started


def test_a_forked_workers_exit_and_kill_are_its_status(tmp_path: Path, fork_mode: str) -> None:
    job = tmp_path / "job.json"
    job.write_text("{}")  # not a job: the worker's main fails on it (KeyError, exit 1)
    with (tmp_path / "stderr.log").open("ab") as stderr:
        failed = forkserver.start(
            ["-m", "parity.worker", str(job)], _environment(), stderr, ("numpy",)
        )
    assert isinstance(failed, forkserver.ForkedWorker)
    assert failed.wait() == 1
    assert "KeyError" in (tmp_path / "stderr.log").read_text()  # its stderr is ours

    hung = _hung_worker(tmp_path)  # stopped as the launcher stops a task on --timeout
    assert hung.poll() is None
    hung.kill()
    assert hung.wait() == -signal.SIGKILL


def test_shared_servers_serve_other_processes_and_private_ones_do_not(
    tmp_path: Path, fork_mode: str
) -> None:
    here = _hung_worker(tmp_path)
    script = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from pathlib import Path; import test_forkserver as t\n"
        "w = t._hung_worker(Path(sys.argv[1])); print(t._parent(w.pid)); w.kill(); w.wait()\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        env=dict(os.environ),  # this process's environment as it knows it (as parity passes it)
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert other.returncode == 0, other.stderr[-2000:]
    shared = int(other.stdout) == _parent(here.pid)
    here.kill()
    assert here.wait() == -signal.SIGKILL
    assert shared == (fork_mode == "shared")


@pytest.mark.keras
def test_a_worker_sets_tfs_threads_though_its_server_imported_tf() -> None:
    # A forked worker finds TensorFlow imported; an export starting TF's pools before the
    # Keras runner could set its count would run the keras variant on every core.
    script = (
        "import sys; sys.modules['sklearn'] = None\n"
        "import tensorflow as tf\n"  # as the server's preload did
        "from parity import lazy\n"
        "lazy.ISOLATED, lazy.TF_THREADS = True, 1\n"
        "lazy.tensorflow()\n"
        "tf.constant(1.0) + 1\n"  # the context starts: too late to set it after this
        "print(tf.config.threading.get_intra_op_parallelism_threads(),"
        " tf.config.threading.get_inter_op_parallelism_threads())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["1", "1"]


def test_a_shared_server_that_ended_is_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forkserver.stop_all()  # this process's connections to the suite's servers
    servers = Path(tempfile.mkdtemp(prefix="pfs-"))  # short: a socket's path has a limit
    monkeypatch.setenv(forkserver.SWITCH, "shared")
    monkeypatch.setenv(forkserver.SHARED_DIR, str(servers))
    try:
        first = _hung_worker(tmp_path)
        first.kill()
        forkserver.stop_shared(servers)  # as at the end of a test session
        assert first.wait() == -signal.SIGKILL
        deadline = time.monotonic() + 30
        while list(servers.glob("*.sock")) and time.monotonic() < deadline:
            time.sleep(0.05)  # the server removes its socket as it ends
        # this process still holds its connection to the ended server: the first start
        # after it is a fresh worker, the next one is forked from a new server
        with (tmp_path / "stderr.log").open("ab") as stderr:
            fresh = forkserver.start(["-c", "pass"], _environment(), stderr, ("numpy",))
        assert not isinstance(fresh, forkserver.ForkedWorker) and fresh.wait() == 0
        second = _hung_worker(tmp_path)
        second.kill()
        assert second.wait() == -signal.SIGKILL
    finally:
        forkserver.stop_shared(servers)
        shutil.rmtree(servers, ignore_errors=True)


PRINT_PATH = (
    "import colorsys, json, os, resource, sys\n"
    "limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]\n"
    "umask = [l for l in open('/proc/self/status') if l.startswith('Umask:')][0].split()[1]\n"
    "print_path = [sys.path, os.getppid(), colorsys.__file__, limit, umask]\n"
    "json.dump(print_path, open(sys.argv[1], 'w'))\n"
)


def _python_m_path(folder: Path, env: dict[str, str], forked: bool = False) -> list[Any]:
    """``[sys.path, parent pid, colorsys' file, file size limit, umask]`` in ``python -m
    print_path`` started in ``folder`` with ``env``: a fresh interpreter, or a child of the
    server for colorsys."""
    (folder / "print_path.py").write_text(PRINT_PATH)
    out = folder / "out.json"
    out.unlink(missing_ok=True)  # a run that writes nothing fails here, not on an old file
    if not forked:
        subprocess.run([sys.executable, "-m", "print_path", str(out)], cwd=folder, env=env)
        return list(json.loads(out.read_text()))
    here = os.getcwd()
    os.chdir(folder)
    try:
        with (folder / "stderr.log").open("ab") as stderr:
            argv = ["-m", "print_path", str(out)]
            worker = forkserver.start(argv, env, stderr, ("colorsys",))
    finally:
        os.chdir(here)
    assert isinstance(worker, forkserver.ForkedWorker)
    assert worker.wait() == 0, (folder / "stderr.log").read_text()
    return list(json.loads(out.read_text()))


def test_a_child_gets_the_path_a_fresh_worker_would_have(tmp_path: Path) -> None:
    defaults = worker_server.default_path()
    project = tmp_path / "project"
    project.mkdir()
    shapes = [
        "",
        os.pathsep.join(sys.path),  # what parity passes: the parent's whole path
        os.pathsep.join(["relative", str(project), str(tmp_path), "", str(tmp_path)]),
    ]
    for python_path in shapes:
        env = dict(os.environ, PYTHONPATH=python_path)
        expected = _python_m_path(project, env)[0]
        assert worker_server.fresh_path(str(project), env, defaults) == expected, python_path


def test_a_path_that_finds_an_imported_module_elsewhere_is_refused(tmp_path: Path) -> None:
    # this process's view of what a server imported, less pytest's own modules (conftest)
    located = {
        name: entry
        for name, entry in worker_server._located(sys.path).items()
        if name in {"numpy", "parity", "json"}
    }
    assert len(located) == 3
    project = tmp_path / "project"
    (project / "parity").mkdir(parents=True)  # what `parity init` makes: not a package
    (project / "parity" / "tolerances.toml").write_text("")
    (project / "my_models.py").write_text("")  # the project's own modules: not imported
    path = worker_server.fresh_path(str(project), dict(os.environ), worker_server.default_path())
    assert worker_server.shadowed(path, located) is None
    (project / "numpy.py").write_text("")
    assert worker_server.shadowed(path, located) == "numpy"
    (project / "numpy.py").unlink()
    (project / "parity" / "__init__.py").write_text("")
    assert worker_server.shadowed(path, located) == "parity"
    assert worker_server.shadowed([p for p in path if "site-packages" not in p], located)


def test_clients_in_other_folders_share_a_server_unless_it_imported_what_they_shadow(
    tmp_path: Path, fork_mode: str
) -> None:
    first, other, shadowing = (tmp_path / n for n in ("first", "other", "shadowing"))
    for folder in (first, other, shadowing):
        folder.mkdir()
    (shadowing / "colorsys.py").write_text("")  # what a fresh worker there imports
    python_path = os.pathsep.join(sys.path)
    envs = {
        folder: dict(_environment(), PYTHONPATH=path)
        for folder, path in [
            (first, python_path),
            (other, os.pathsep.join([str(other / "lib"), python_path])),
            (shadowing, python_path),
        ]
    }
    fresh = {folder: _python_m_path(folder, env) for folder, env in envs.items()}
    forked = {folder: _python_m_path(folder, env, forked=True) for folder, env in envs.items()}
    for folder in envs:  # sys.path and the module found: those of a fresh interpreter there
        assert forked[folder][0] == fresh[folder][0]
        assert forked[folder][2] == fresh[folder][2]
    assert fresh[shadowing][2] == str(shadowing / "colorsys.py")
    server = forked[first][1]
    assert forked[other][1] == server != os.getpid()  # one server for both
    assert forked[shadowing][1] not in (server, os.getpid())  # one started there


def test_a_worker_inherits_the_limits_and_umask_of_its_client(
    tmp_path: Path, fork_mode: str
) -> None:
    # A limit set before a run (the disk-full test's RLIMIT_FSIZE): its workers have it, as
    # fresh ones would, though a server of other limits is up.
    import resource

    env = dict(_environment(), PYTHONPATH=os.pathsep.join(sys.path))
    unlimited = _python_m_path(tmp_path, env, forked=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    umask = os.umask(0o027)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**30, hard))
    try:
        fresh = _python_m_path(tmp_path, env)
        limited = _python_m_path(tmp_path, env, forked=True)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        os.umask(umask)
    assert fresh[3:] == [2**30, "0027"]
    assert limited[3:] == fresh[3:] and unlimited[3:] == [soft, f"{umask:04o}"]
    assert limited[1] != unlimited[1]  # another server


def test_a_bad_fork_mode_is_bad_input(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(forkserver.SWITCH, "yes")
    with pytest.raises(ParityError, match="PARITY_FORKSERVER='yes': use one of"):
        forkserver.server(("numpy",), _environment())
