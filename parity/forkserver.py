"""Resident pre-imported worker starters: a fork server per framework set.

A worker that imports torch and torchvision spends ~4.6 s of CPU on that import, one that
imports TensorFlow and Keras ~8 s (bench/speed2_quiet.md), and a test session or a
plugin user's run starts dozens of them. A fork server is started once per framework set
(a backend's :attr:`~parity.backends.Backend.preload`), with exactly the environment the
worker would get; it imports that set, never runs a framework op (no thread pools), and
forks one child per worker, which runs ``parity.worker.main`` as ``python -m
parity.worker JOB.json`` would: the client's working directory, environment,
``sys.argv`` and stderr file; its own process, so a crash is still a result.

What keeps a forked worker's numbers identical to a fresh one's (tests/test_forkserver.py
checks them bitwise):

* a server serves only clients whose worker environment equals the one it was started
  with (except :data:`RUNTIME_ONLY` variables, read after import), the same Python, the
  same working directory and the same preload: variables read at import time
  (``ATEN_CPU_CAPABILITY``, ``PYTHONHASHSEED``, thread counts) cannot differ;
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
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import IO, Any

#: Environment variables a server's children may differ in from the server itself: read
#: after the imports, so a child gets the client's values.
RUNTIME_ONLY = frozenset({"PYTEST_CURRENT_TEST"})
#: Turn the fork servers off (``0``): every worker is a fresh interpreter.
SWITCH = "PARITY_FORKSERVER"
#: Servers one process keeps (the least recently used one stops beyond that).
MAX_SERVERS = 4
#: Seconds a server may take to import its set before its workers start fresh instead.
START_TIMEOUT = 300.0


def enabled() -> bool:
    """Whether workers may be forked from a server here."""
    return sys.platform == "linux" and os.environ.get(SWITCH, "1") != "0"


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
    """The client's handle on one server process."""

    def __init__(self, preload: Sequence[str], env: Mapping[str, str]) -> None:
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "parity.worker_server", str(theirs.fileno()), *preload],
            env=dict(env),
            pass_fds=[theirs.fileno()],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,  # a failing import shows in the fresh worker instead
        )
        theirs.close()
        self.lock = threading.Lock()
        self.broken = False

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
            raise OSError("the fork server did not start a worker")
        return ForkedWorker(mine, int(line.split()[1]), rest)

    def stop(self) -> None:
        self.control.close()  # the server ends (and kills the children it still has)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_SERVERS: dict[tuple[Any, ...], ForkServer] = {}
_LOCK = threading.Lock()


def _key(preload: Sequence[str], env: Mapping[str, str]) -> tuple[Any, ...]:
    frozen = tuple(sorted((k, v) for k, v in env.items() if k not in RUNTIME_ONLY))
    return (sys.executable, os.getcwd(), tuple(preload), frozen)


def server(preload: Sequence[str], env: Mapping[str, str]) -> ForkServer | None:
    """The server for ``preload`` under the worker environment ``env``, started if needed
    (it imports in the background); None when fork servers are off or it failed before."""
    if not preload or not enabled():
        return None
    key = _key(preload, env)
    with _LOCK:
        found = _SERVERS.pop(key, None)
        if found is None or found.process.poll() is not None and not found.broken:
            found = ForkServer(preload, env)
        _SERVERS[key] = found  # most recently used last
        while len(_SERVERS) > MAX_SERVERS:
            _SERVERS.pop(next(iter(_SERVERS))).stop()
    return None if found.broken else found


def start(
    argv: Sequence[str], env: Mapping[str, str], stderr: IO[bytes], preload: Sequence[str]
) -> ForkedWorker | subprocess.Popen[bytes]:
    """Start a worker: forked from the server for ``preload`` when there is one, else fresh."""
    found = server(preload, env)
    if found is not None:
        try:
            return found.fork(argv, env, stderr)
        except OSError:
            found.broken = True  # e.g. an import error: fresh workers report it
            found.process.kill()
    return subprocess.Popen(
        [sys.executable, *argv], env=dict(env), stdout=subprocess.DEVNULL, stderr=stderr
    )


@atexit.register
def stop_all() -> None:
    """Stop this process's servers."""
    with _LOCK:
        while _SERVERS:
            _SERVERS.popitem()[1].stop()
