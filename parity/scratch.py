"""Temporary folders that a later process can tell were abandoned, and removes.

A process killed by a signal (SIGKILL, the OOM killer, a node's shutdown) runs no
``finally`` and no finalizer: its run directory (the workers' taps, ~64 MB for
mobilenet_v2) or a Ray actor's copy of its artifact (14 MB) stayed in the temporary folder
for good. The process that makes such a folder now holds an exclusive ``flock`` on
``.owner`` in it for as long as the folder is in use; the kernel drops the lock when the
process dies, however it dies. Before making a folder, a process removes the folders of
the same kind whose lock it can take. A lock is a fact of the kernel, not a pid: it holds
across pid namespaces sharing one temporary folder (containers). A folder without a lock
file (made by an older parity, or not yet locked) is never removed.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows: no flock; a killed process's folder stays, as before
    fcntl = None  # type: ignore[assignment]

OWNER = ".owner"

#: The owner locks of this process's folders, open while each folder is in use.
_held: dict[Path, IO[str]] = {}


def owned_folder(prefix: str) -> Path:
    """A new temporary folder ``<tmp>/<prefix>…``, locked as this process's until
    :func:`remove_owned` (the abandoned folders of ``prefix`` are removed first)."""
    root = Path(tempfile.gettempdir())
    remove_orphans(root, prefix)
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=root))
    _lock(folder)
    return folder


def owned_temporary(prefix: str) -> tempfile.TemporaryDirectory[str]:
    """:func:`owned_folder` as a ``TemporaryDirectory`` (removed at exit or collection)."""
    remove_orphans(Path(tempfile.gettempdir()), prefix)
    folder = tempfile.TemporaryDirectory(prefix=prefix)
    _lock(Path(folder.name))
    return folder


def remove_owned(folder: Path) -> None:
    """Remove a folder of :func:`owned_folder` and release its lock."""
    shutil.rmtree(folder, ignore_errors=True)
    handle = _held.pop(Path(folder), None)
    if handle is not None:
        handle.close()


def remove_orphans(root: Path, prefix: str) -> list[Path]:
    """Remove the folders ``root/<prefix>*`` whose owner lock no process holds; returns
    them."""
    removed = []
    for folder in root.glob(f"{prefix}*"):
        if folder.is_dir() and _abandoned(folder):
            shutil.rmtree(folder, ignore_errors=True)  # another user's stays, unreadable
            if not folder.exists():
                removed.append(folder)
    return removed


def _lock(folder: Path) -> None:
    if fcntl is not None:
        handle = open(folder / OWNER, "w")  # noqa: SIM115 - held while the folder is in use
        fcntl.flock(handle, fcntl.LOCK_EX)
        _held[folder] = handle


def _abandoned(folder: Path) -> bool:
    """Whether ``folder`` has an owner lock that no process holds."""
    if fcntl is None:
        return False
    try:
        handle = open(folder / OWNER)  # noqa: SIM115 - closed below, releasing our lock
    except OSError:  # no lock file (never removed), or another user's
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
