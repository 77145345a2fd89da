"""Resident pre-imported worker starters: a fork server per framework set.

A worker that imports torch and torchvision spends ~4.6 s of CPU on that import, one that
imports TensorFlow and Keras ~8 s (bench/speed2_quiet.md), any other ~0.4 s for Python,
numpy and parity, and a test session or a plugin user's run starts dozens of them. A fork
server is started once per framework set (a backend's
:attr:`~parity.backends.Backend.preload`; none: parity's worker and numpy only), with
exactly the environment the worker would get; it imports that set, never runs a framework
op (no thread pools), and forks one child per worker, which runs ``python -m
parity.worker JOB.json`` as a fresh interpreter would: the client's working directory,
environment, ``sys.path``, ``sys.argv`` and stderr file; its own process, so a crash is
still a result.

What keeps a forked worker's numbers identical to a fresh one's (tests/test_forkserver.py
checks them bitwise):

* a server serves only clients whose worker environment equals the one it was started
  with (except :data:`RUNTIME_ONLY` variables, read after import, and ``PYTHONPATH``),
  the same Python and the same preload: variables read at import time
  (``ATEN_CPU_CAPABILITY``, ``PYTHONHASHSEED``, thread counts) cannot differ; and with
  the resource limits, umask and niceness of the process that started it, which its
  children inherit as a fresh worker inherits its parent's;
* a client in another directory or with another ``PYTHONPATH`` gets a child with the
  ``sys.path`` a fresh worker would have there, unless that path would find a module
  the server imported somewhere else: then the server refuses, and the client uses a
  server started in its own directory with its own path (:mod:`parity.worker_server`);
* the preload imports go through :mod:`parity.lazy` as a worker's would (TensorFlow
  without scikit-learn), and set no thread count: the child sets its own
  (:data:`parity.lazy.TF_THREADS`).

This module is the client half, in the process that launches workers
(:mod:`parity.workers`), which imports no framework; the server is
:mod:`parity.worker_server`. A process's servers end with it (their control socket
closes). Linux only; ``PARITY_FORKSERVER=0``
turns it off, and a server that cannot start (an import error) makes the worker start
fresh, where the error is reported as before.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

from parity.errors import ParityError

#: Environment variables a server's children may differ in from the server itself: read
#: after the imports, so a child gets the client's values (parity's own ``PARITY_*`` too).
RUNTIME_ONLY = frozenset({"PYTEST_CURRENT_TEST"})
#: ``process`` (default): servers of the launching process, ending with it; ``shared``:
#: one server per key for every process (a test session's CLI runs, repeated warm runs),
#: detached, ending after :data:`IDLE_SECONDS` without clients; ``0``: fresh workers only.
SWITCH = "PARITY_FORKSERVER"
MODES = {"0": "off", "off": "off", "1": "process", "process": "process", "shared": "shared"}
#: The folder of the shared servers' sockets (default ``/tmp/parity-forkservers-<uid>``).
SHARED_DIR = "PARITY_FORKSERVER_DIR"
#: Seconds a shared server waits for a client before it ends.
IDLE_SECONDS = 120
#: The message that stops a shared server (:func:`stop_shared`).
QUIT = b'{"quit": true}'
#: Servers one process keeps (the least recently used one stops beyond that).
MAX_SERVERS = 4
#: Seconds a server may take to import its set before its workers start fresh instead.
START_TIMEOUT = 300.0


class Refused(OSError):
    """A server whose imports the client's ``sys.path`` would have found elsewhere."""


class ForkedWorker:
    """A worker forked by a server, with the part of :class:`subprocess.Popen`'s interface
    the launcher uses (``poll``, ``kill``, ``wait``, ``returncode``, ``pid``)."""

    def __init__(self, reply: socket.socket, pid: int, received: bytes = b"") -> None:
        self._reply = reply
        self._received = received  # the server's ``exit STATUS`` line, as far as it came
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self._read(blocking=False)
        return self.returncode

    def wait(self) -> int:
        while self.returncode is None:
            self._read(blocking=True)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL the worker (its server does it: it knows whether the pid is still its child)."""
        if self.returncode is None:
            with contextlib.suppress(OSError):  # the server has gone, and its children with it
                self._reply.sendall(b"k")

    def _read(self, blocking: bool) -> None:
        if not self._received.endswith(b"\n"):
            self._reply.setblocking(blocking)
            try:
                data = self._reply.recv(64)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # the server died before the worker's exit reached us
                self.returncode = -signal.SIGKILL
                self._reply.close()
                return
            self._received += data
            if not self._received.endswith(b"\n"):
                return
        self.returncode = os.waitstatus_to_exitcode(int(self._received.split()[-1]))
        self._reply.close()


class ForkServer:
    """The client's handle on one server: its control socket (and, for a server of this
    process's own, its process)."""

    def __init__(self, control: socket.socket, process: subprocess.Popen[bytes] | None) -> None:
        self.control = control
        self.process = process  # None: a shared server, started by whichever client came first
        self.lock = threading.Lock()
        self.broken = False

    @classmethod
    def private(cls, preload: Sequence[str], env: Mapping[str, str], cwd: str) -> ForkServer:
        """A server of this process's own, ending with it."""
        control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            process = _spawn([f"fd:{theirs.fileno()}", *preload], env, cwd, [theirs.fileno()])
        return cls(control, process)

    @classmethod
    def shared(
        cls, preload: Sequence[str], env: Mapping[str, str], cwd: str, path: Path
    ) -> ForkServer:
        """The server listening on ``path``, started (detached) when none is."""
        from filelock import FileLock

        with FileLock(f"{path}.lock"):
            control = _connect(path)
            if control is None:
                path.unlink(missing_ok=True)  # left by a server that was killed
                _spawn([f"path:{path}", *preload], env, cwd, [], detached=True)
                deadline = time.monotonic() + 10
                while control is None and time.monotonic() < deadline:
                    time.sleep(0.02)  # it listens before it imports
                    control = _connect(path)
        if control is None:
            raise OSError(f"no fork server came up at {path}")
        return cls(control, None)

    def usable(self) -> bool:
        return not self.broken and (self.process is None or self.process.poll() is None)

    def fork(self, argv: Sequence[str], env: Mapping[str, str], stderr: IO[bytes]) -> ForkedWorker:
        """A worker running ``argv`` (``-m parity.worker JOB``); raises OSError when the server
        cannot fork it (it died, or never finished its imports)."""
        mine, theirs = socket.socketpair()
        request = {"argv": list(argv), "env": dict(env), "cwd": os.getcwd()}
        with self.lock:
            try:
                socket.send_fds(
                    self.control, [json.dumps(request).encode()], [theirs.fileno(), stderr.fileno()]
                )
            finally:
                theirs.close()
            mine.settimeout(START_TIMEOUT)
            try:
                data = mine.recv(64)
            except TimeoutError:
                data = b""
        line, _, rest = data.partition(b"\n")
        if not line.startswith(b"pid "):
            mine.close()
            if line.startswith(b"refused "):
                raise Refused(f"the fork server imported {line.split()[1].decode()} elsewhere")
            raise OSError("the fork server did not start a worker")
        return ForkedWorker(mine, int(line.split()[1]), rest)

    def stop(self) -> None:
        """Close the connection; a server of this process's own ends (killing its children)."""
        self.control.close()
        if self.process is not None:
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _spawn(
    args: list[str], env: Mapping[str, str], cwd: str, fds: list[int], detached: bool = False
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "parity.worker_server", *args],
        env=dict(env),
        cwd=cwd,
        pass_fds=fds,
        start_new_session=detached,  # a shared server outlives the client that started it
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,  # a failing import shows in the fresh worker instead
    )


def _connect(path: Path) -> socket.socket | None:
    control = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        control.connect(str(path))
    except OSError:
        control.close()
        return None
    return control


_SERVERS: dict[tuple[Any, ...], ForkServer] = {}
_LOCK = threading.Lock()


def mode() -> str:
    """``off``, ``process`` (the default) or ``shared``, from :data:`SWITCH`."""
    value = os.environ.get(SWITCH, "process")
    if value not in MODES:
        raise ParityError(f"{SWITCH}={value!r}: use one of {', '.join(sorted(MODES))}")
    return "off" if sys.platform != "linux" else MODES[value]


def _limits() -> tuple[Any, ...]:
    """What a child inherits from the process that started its server, as a fresh worker
    does from its parent: resource limits (a file size limit), umask, niceness."""
    import resource

    names = sorted(n for n in dir(resource) if n.startswith("RLIMIT_"))
    status = Path("/proc/self/status").read_text()
    umask = next((line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), "")
    niceness = os.getpriority(os.PRIO_PROCESS, 0)
    return (tuple((n, resource.getrlimit(getattr(resource, n))) for n in names), umask, niceness)


def _key(preload: Sequence[str], env: Mapping[str, str], here: bool) -> tuple[Any, ...]:
    """What a server's children share with it: the Python, the preload, the environment
    (``PYTHONPATH`` and the working directory too when ``here``: one refused elsewhere),
    the limits it inherits."""
    frozen = tuple(
        sorted(
            (k, v)
            for k, v in env.items()
            if k not in RUNTIME_ONLY and not k.startswith("PARITY_") and (here or k != "PYTHONPATH")
        )
    )
    return (sys.executable, os.getcwd() if here else "/", tuple(preload), frozen, _limits())


def _socket_path(key: tuple[Any, ...]) -> Path | None:
    """Where the shared server for ``key`` listens: a private folder, named by a digest of
    the key and of what the server imported (parity's files, the preloaded packages), so an
    edit or an upgrade starts a new server; None when the folder is not private to us."""
    folder = Path(os.environ.get(SHARED_DIR) or f"/tmp/parity-forkservers-{os.getuid()}")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = folder.stat()
    if status.st_uid != os.getuid() or status.st_mode & 0o077:
        return None
    digest = hashlib.sha256(repr((key, _installed_state(key[2]))).encode()).hexdigest()[:24]
    path = folder / f"{digest}.sock"
    return path if len(str(path)) < 100 else None  # the limit of a Unix socket's path


def _installed_state(preload: Sequence[str]) -> list[Any]:
    """parity's files and the preloaded packages' ``__init__`` files, with their mtimes (an
    upgrade rewrites them), found without importing anything."""
    files = sorted(Path(__file__).parent.rglob("*.py"))
    for module in ("torch", "torchvision") if "torch" in preload else preload:
        spec = importlib.util.find_spec(module)
        if spec is not None and spec.origin:
            files.append(Path(spec.origin))
    return [(str(f), f.stat().st_mtime_ns) for f in files]


def server(preload: Sequence[str], env: Mapping[str, str], here: bool = False) -> ForkServer | None:
    """The server for ``preload`` under the worker environment ``env``, started if needed
    (it imports in the background); None when fork servers are off or it failed before.
    ``here``: one started in this directory with this ``PYTHONPATH`` (for a client another
    server refused)."""
    chosen = mode()
    if chosen == "off":
        return None
    key = _key(preload, env, here)
    with _LOCK:
        found = _SERVERS.pop((chosen, *key), None)
        if found is None or not found.usable() and not found.broken:
            path = _socket_path(key) if chosen == "shared" else None
            try:
                found = (
                    ForkServer.shared(preload, env, key[1], path)
                    if path
                    else ForkServer.private(preload, env, key[1])
                )
            except OSError:
                return None
        _SERVERS[chosen, *key] = found  # most recently used last
        while len(_SERVERS) > MAX_SERVERS:
            _SERVERS.pop(next(iter(_SERVERS))).stop()
    return found if found.usable() else None


def start(
    argv: Sequence[str], env: Mapping[str, str], stderr: IO[bytes], preload: Sequence[str]
) -> ForkedWorker | subprocess.Popen[bytes]:
    """Start a worker: forked from the server for ``preload`` when there is one, else fresh."""
    for here in (False, True):
        found = server(preload, env, here)
        if found is None:
            break
        try:
            return found.fork(argv, env, stderr)
        except Refused:  # our path finds its imports elsewhere: the server started here
            continue
        except OSError:  # e.g. an import error: a fresh worker reports it
            if found.process is not None:
                found.broken = True  # not started again by this process
                found.process.kill()
            else:  # a shared one that ended: connected again (or started) next time
                found.stop()
                with _LOCK:
                    for key in [k for k, v in _SERVERS.items() if v is found]:
                        del _SERVERS[key]
            break
    return subprocess.Popen(
        [sys.executable, *argv], env=dict(env), stdout=subprocess.DEVNULL, stderr=stderr
    )


@atexit.register
def stop_all() -> None:
    """Stop this process's servers (and leave the shared ones)."""
    with _LOCK:
        while _SERVERS:
            _SERVERS.popitem()[1].stop()


def stop_shared(folder: Path) -> None:
    """Stop every shared server listening in ``folder`` (a test session's, at its end)."""
    for path in folder.glob("*.sock"):
        control = _connect(path)
        if control is not None:
            with control:
                control.send(QUIT)
