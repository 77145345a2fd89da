"""The folder a Ray actor writes its artifact to, and the removal of those whose actor died.

An actor killed by a signal (SIGKILL from Ray, the OOM killer, a node's shutdown) runs no
finalizer, so its ``TemporaryDirectory`` stayed behind: one artifact (14 MB for
mobilenet_v2's ONNX) in the temporary folder per death. Each actor now holds an exclusive
``flock`` on ``.owner`` in its folder for as long as it lives; the kernel drops it when the
process dies, however it dies. Before it writes its own folder, an actor removes those
whose lock it can take. A lock is a fact of the kernel, not a pid: it holds across pid
namespaces sharing one temporary folder (containers), where a pid names another process.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import IO

try:
    import fcntl
except ImportError:  # Windows: no flock; a killed actor's folder stays, as before
    fcntl = None  # type: ignore[assignment]

PREFIX = "parity-ray-"
OWNER = ".owner"
#: A folder without its lock file is being made (the lock follows at once) unless older:
#: then an older parity left it, or its actor died between the two.
UNLOCKED_GRACE_S = 60.0

#: This process's owner locks: open for its whole life (the kernel releases them at exit).
_held: list[IO[str]] = []


def artifact_folder() -> tempfile.TemporaryDirectory[str]:
    """A new folder for this actor's artifact, locked as its own (abandoned ones removed
    first)."""
    remove_orphans(Path(tempfile.gettempdir()))
    folder = tempfile.TemporaryDirectory(prefix=PREFIX)
    if fcntl is not None:
        handle = open(Path(folder.name, OWNER), "w")  # noqa: SIM115 - held until exit
        fcntl.flock(handle, fcntl.LOCK_EX)
        _held.append(handle)
    return folder


def remove_orphans(root: Path) -> list[Path]:
    """Remove the actor folders in ``root`` no living process owns; returns them."""
    removed = []
    for folder in root.glob(f"{PREFIX}*"):
        if folder.is_dir() and _abandoned(folder):
            shutil.rmtree(folder, ignore_errors=True)  # another user's stays, unreadable
            if not folder.exists():
                removed.append(folder)
    return removed


def _abandoned(folder: Path) -> bool:
    """Whether no process holds ``folder``'s owner lock (one without a lock: when old)."""
    if fcntl is None:
        return False
    try:
        handle = open(folder / OWNER)  # noqa: SIM115 - closed below, releasing our lock
    except FileNotFoundError:
        return time.time() - folder.stat().st_mtime > UNLOCKED_GRACE_S
    except OSError:  # another user's
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
