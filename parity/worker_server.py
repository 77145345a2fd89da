"""The fork server process: ``python -m parity.worker_server FD MODULE...``.

It imports ``MODULE...`` as a worker would, then forks one worker per request on the
control socket ``FD`` and reports each one's exit status (:mod:`parity.forkserver`).
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
import traceback
from collections.abc import Sequence
from typing import Any


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


def serve(control_fd: int, preload: Sequence[str]) -> None:
    """The server's loop: fork a worker per request, report each one's exit status."""
    control = socket.socket(fileno=control_fd)
    _preload(preload)
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    selector = selectors.DefaultSelector()
    selector.register(control, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}
    while True:
        for key, _ in selector.select(timeout=1.0):
            if key.fileobj is control:
                message, fds, _, _ = socket.recv_fds(control, 1 << 20, 2)
                if not message:
                    for pid in children:
                        os.kill(pid, signal.SIGKILL)
                    return
                reply = socket.socket(fileno=fds[0])
                sys.stdout.flush()
                sys.stderr.flush()
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    for each in (control, reply, *children.values()):
                        each.close()
                    selector.close()
                    os.close(wake_read)
                    os.close(wake_write)
                    _child(json.loads(message), fds[1])
                os.close(fds[1])
                reply.sendall(f"pid {pid}\n".encode())
                children[pid] = reply
                selector.register(reply, selectors.EVENT_READ, pid)
            elif key.fileobj is wake_read:
                while True:
                    try:
                        if not os.read(wake_read, 512):
                            break
                    except BlockingIOError:
                        break
            else:  # a kill request, or the client closed the socket: the worker goes
                key.fileobj.recv(16)  # type: ignore[union-attr]
                os.kill(key.data, signal.SIGKILL)
                selector.unregister(key.fileobj)
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


if __name__ == "__main__":
    serve(int(sys.argv[1]), sys.argv[2:])
