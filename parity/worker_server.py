"""The fork server process: ``python -m parity.worker_server fd:N|path:P MODULE...``.

It imports ``MODULE...`` as a worker would, then forks one worker per request on its
control socket(s) and reports each one's exit status (:mod:`parity.forkserver`, the
client half, says when and how).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from parity.forkserver import IDLE_SECONDS, QUIT


def _preload(modules: Sequence[str]) -> None:
    import importlib

    from parity import lazy

    lazy.ISOLATED = True  # as in a worker: TensorFlow without torch or scikit-learn
    for module in modules:
        if module == "torch":
            lazy.torch()
        elif module == "tensorflow":
            lazy.tensorflow()
        else:
            importlib.import_module(module)
    importlib.import_module("parity.worker")


def _child(request: dict[str, Any], stderr_fd: int) -> None:
    """In the forked child: become ``python -m parity.worker JOB`` and exit."""
    code = 1
    try:
        os.dup2(stderr_fd, 2)
        os.close(stderr_fd)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 1)
        os.close(devnull)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        from parity import worker

        sys.argv = [worker.__file__, *request["argv"][2:]]
        code = worker.main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def serve(address: str, preload: Sequence[str]) -> None:
    """The server's loop: fork a worker per request, report each one's exit status.

    ``address`` is ``fd:N`` (a socket of the one client that started it: the server ends
    with it) or ``path:P`` (shared: it listens on P for any number of clients and ends after
    :data:`parity.forkserver.IDLE_SECONDS` without one, or when told to quit).
    """
    kind, _, where = address.partition(":")
    selector = selectors.DefaultSelector()
    listener = None
    if kind == "path":  # listen before importing: the client waits on the socket, not us
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        listener.bind(where)
        listener.listen()
        selector.register(listener, selectors.EVENT_READ, "listen")
    else:
        selector.register(socket.socket(fileno=int(where)), selectors.EVENT_READ, "control")
    _preload(preload)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector.register(wake_read, selectors.EVENT_READ, "wake")
    children: dict[int, socket.socket] = {}
    idle_since = time.monotonic()
    try:
        while True:
            for key, _ in selector.select(timeout=1.0):
                channel: Any = key.fileobj
                if key.data == "listen":
                    selector.register(channel.accept()[0], selectors.EVENT_READ, "control")
                elif key.data == "control":
                    message, fds, _, _ = socket.recv_fds(channel, 1 << 20, 2)
                    if not message or message == QUIT:
                        selector.unregister(channel)
                        channel.close()
                        if listener is None or message == QUIT:
                            return
                        continue
                    pid = _fork(json.loads(message), fds, selector, wake_read, wake_write)
                    reply = socket.socket(fileno=fds[0])
                    reply.sendall(f"pid {pid}\n".encode())
                    children[pid] = reply
                    selector.register(reply, selectors.EVENT_READ, pid)
                elif key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        while os.read(wake_read, 512):
                            pass
                else:  # a kill request, or the client closed the socket: the worker goes
                    channel.recv(16)
                    os.kill(key.data, signal.SIGKILL)
                    selector.unregister(channel)
            while children:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                reply = children.pop(pid)
                with contextlib.suppress(KeyError):
                    selector.unregister(reply)
                with contextlib.suppress(OSError):
                    reply.sendall(f"exit {status}\n".encode())
                reply.close()
            clients = sum(1 for k in selector.get_map().values() if k.data == "control")
            if clients or children:
                idle_since = time.monotonic()
            elif listener is not None and time.monotonic() - idle_since > IDLE_SECONDS:
                return
    finally:
        for pid in children:
            os.kill(pid, signal.SIGKILL)
        if listener is not None:
            with contextlib.suppress(OSError):
                os.unlink(where)


def _fork(
    request: dict[str, Any], fds: list[int], selector: selectors.BaseSelector, *pipe: int
) -> int:
    """Fork the worker of ``request``; returns its pid (in the server)."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        for key in list(selector.get_map().values()):
            if key.data != "wake":
                key.fileobj.close()  # type: ignore[union-attr]
        selector.close()
        for fd in (*pipe, fds[0]):
            os.close(fd)
        _child(request, fds[1])
    os.close(fds[1])
    return pid


if __name__ == "__main__":
    serve(sys.argv[1], sys.argv[2:])
