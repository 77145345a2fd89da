"""The fork server process: ``python -m parity.worker_server fd:N|path:P MODULE...``.

It imports ``MODULE...`` as a worker would, then forks one worker per request on its
control socket(s) and reports each one's exit status (:mod:`parity.forkserver`, the
client half, says when and how).

A client may work in another directory, with another ``PYTHONPATH``, than the server: the
child gets the ``sys.path`` a fresh ``python -m parity.worker`` would have there
(:func:`fresh_path`), and a request whose path would resolve a module the server already
imported from somewhere else (a ``numpy.py`` in the client's directory) is refused
(:func:`shadowed`): the client then uses a server started where it is.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import importlib.machinery
import json
import os
import runpy
import selectors
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from typing import Any

from parity.forkserver import IDLE_SECONDS, QUIT
from parity.lazy import package_version


def _preload(modules: Sequence[str]) -> None:
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


def default_path() -> list[str]:
    """The ``sys.path`` entries this Python adds after ``PYTHONPATH`` (the standard library,
    site-packages, ``.pth`` lines), read from a bare interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = "import json, sys; print(json.dumps(sys.path))"
    found = json.loads(subprocess.check_output([sys.executable, "-c", probe], env=env, cwd="/"))
    return list(found[1:] if found and found[0] == "" else found)


def fresh_path(cwd: str, env: dict[str, str], defaults: Sequence[str]) -> list[str]:
    """The ``sys.path`` of ``python -m MODULE`` started in ``cwd`` with ``env``: the directory
    first, then ``PYTHONPATH`` and ``defaults``, made absolute and without repeats."""
    entries = [e for e in env.get("PYTHONPATH", "").split(os.pathsep) if e]
    rest = dict.fromkeys(os.path.normpath(os.path.join(cwd, e)) for e in [*entries, *defaults])
    return [cwd, *rest] if not env.get("PYTHONSAFEPATH") else list(rest)


class _PathIndex:
    """What each entry of a ``sys.path`` holds, listed once (a request's worth)."""

    def __init__(self, path: Sequence[str]) -> None:
        self.path = path
        self.listing: dict[str, set[str]] = {}
        self.real: dict[str, str] = {}
        self.suffixes = importlib.machinery.all_suffixes()

    def provides(self, entry: str, name: str) -> bool:
        """Whether ``entry`` has a module or a regular package ``name``."""
        if entry not in self.listing:
            try:
                self.listing[entry] = set(os.listdir(entry))
            except OSError:
                self.listing[entry] = set()
        names = self.listing[entry]
        if any(name + suffix in names for suffix in self.suffixes):
            return True
        return name in names and any(
            os.path.isfile(os.path.join(entry, name, "__init__" + s)) for s in self.suffixes
        )

    def finds(self, name: str, home: str) -> bool:
        """Whether the first entry with ``name`` is ``home`` (the same folder, resolved)."""
        first = next((e for e in self.path if self.provides(e, name)), None)
        return first is not None and self.realpath(first) == self.realpath(home)

    def realpath(self, entry: str) -> str:
        if entry not in self.real:
            self.real[entry] = os.path.realpath(entry)
        return self.real[entry]


def _located(path: Sequence[str]) -> dict[str, str]:
    """Top-level imported module -> the folder it was found in, for the modules that
    ``path``'s first entry providing them did provide (not builtins, not modules a
    meta-path hook or a file location placed)."""
    index = _PathIndex(path)
    found = {}
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        if "." in name or not origin:
            continue
        home = os.path.dirname(os.path.dirname(origin) if hasattr(module, "__path__") else origin)
        if index.finds(name, home):
            found[name] = home
    return found


def shadowed(path: Sequence[str], located: dict[str, str]) -> str | None:
    """An imported module (of ``located``) that ``path`` would find in another folder first,
    or a namespace package ``path`` would add a portion to; None when there is none."""
    index = _PathIndex(path)
    for name, home in located.items():
        if not index.finds(name, home):
            return name
    own = set(sys.path)
    for name, module in list(sys.modules.items()):
        if "." not in name and getattr(module, "__file__", None) is None:
            portions = getattr(module, "__path__", None)
            if portions is not None and any(
                e not in own and os.path.isdir(os.path.join(e, name)) for e in path
            ):
                return name
    return None


def _child(request: dict[str, Any], stderr_fd: int) -> None:
    """In the forked child: become ``python -m MODULE ARGS...`` (the request's ``argv``;
    ``parity.worker JOB`` for a worker) where the client is, and exit."""
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
        sys.path[:] = request["path"]
        importlib.invalidate_caches()
        package_version.cache_clear()  # read as a fresh interpreter would, if ever read here
        option, module, *args = request["argv"]
        assert option == "-m", request["argv"]
        sys.argv = [option, *args]  # runpy puts the module's file first, as python -m does
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 1
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
    defaults = default_path()
    _preload(preload)
    located = _located(sys.path)
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
                    request = json.loads(message)
                    request["path"] = fresh_path(request["cwd"], request["env"], defaults)
                    reply = socket.socket(fileno=fds[0])
                    conflict = shadowed(request["path"], located)
                    if conflict is not None:
                        os.close(fds[1])
                        with contextlib.suppress(OSError):
                            reply.sendall(f"refused {conflict}\n".encode())
                        reply.close()
                        continue
                    pid = _fork(request, fds, selector, wake_read, wake_write)
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
