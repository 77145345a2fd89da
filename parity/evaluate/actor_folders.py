"""The folder a Ray actor writes its artifact to, and the removal of those whose actor died.

An actor killed by a signal (SIGKILL from Ray, the OOM killer, a node's shutdown) runs no
finalizer, so its ``TemporaryDirectory`` stayed behind: one artifact (14 MB for
mobilenet_v2's ONNX) in the temporary folder per death. Each folder is named by its
actor's pid; an actor removes the folders of dead actors on its node before it writes its
own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "parity-ray-"


def artifact_folder() -> tempfile.TemporaryDirectory[str]:
    """A new folder for this actor's artifact (the dead actors' ones removed first)."""
    remove_orphans(Path(tempfile.gettempdir()))
    return tempfile.TemporaryDirectory(prefix=f"{PREFIX}{os.getpid()}-")


def remove_orphans(root: Path) -> list[Path]:
    """Remove the actor folders in ``root`` whose actor process is gone; returns them."""
    removed = []
    for folder in root.glob(f"{PREFIX}*-*"):
        pid = folder.name.removeprefix(PREFIX).split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)  # another user's stays, unreadable
            if not folder.exists():
                removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, killed and not yet reaped, does not; another
    user's process does)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
