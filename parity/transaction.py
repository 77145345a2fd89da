"""Replace a whole folder in one step (numpy-free): how a golden set is updated.

Protocol, for a target folder ``root/<name>``:

1. take ``root/.<name>.lock`` (``filelock``): concurrent updates serialise;
2. write the complete new set into ``root/.<name>.staging`` (a leftover from an
   interrupted update is removed first);
3. swap it in with one ``renameat2(RENAME_EXCHANGE)`` (Linux): readers see the old set
   or the new one, never a mixture; the old set, now in the staging name, is deleted.
   Where the exchange is not available, two renames through ``root/.<name>.old``.

A kill (SIGKILL, SIGINT, power) at any moment leaves the old set in place, or the old
set in ``.old`` with no target; :func:`recover` (run before reading) puts it back and
removes leftovers. Any ``OSError`` (disk full, no permission) removes the staging
folder and becomes one :class:`~parity.errors.ParityError` line.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from parity.atomic import write_error

if TYPE_CHECKING:
    from filelock import FileLock

#: Seconds an update waits for another one on the same folder before giving up.
LOCK_TIMEOUT = 600.0

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _sibling(target: Path, role: str) -> Path:
    return target.with_name(f".{target.name}.{role}")


def lock_for(target: Path) -> FileLock:
    """The lock serialising updates of ``target`` (filelock is imported only to write)."""
    from filelock import FileLock

    return FileLock(str(_sibling(target, "lock")))


@contextlib.contextmanager
def replace_folder(target: Path, timeout: float = LOCK_TIMEOUT) -> Iterator[Path]:
    """Yield an empty staging folder; on success it replaces ``target`` as a whole."""
    target = Path(target)
    from filelock import Timeout

    staging = _sibling(target, "staging")
    lock = lock_for(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=timeout)
    except Timeout:
        raise write_error(target, OSError(f"another update holds {lock.lock_file}")) from None
    except OSError as exc:
        raise write_error(target, exc) from None
    try:
        _recover_locked(target)
        staging.mkdir()
        yield staging
        _swap(staging, target)
    except OSError as exc:
        _rmtree(staging)
        raise write_error(target, exc) from None
    except BaseException:
        _rmtree(staging)
        raise
    finally:
        lock.release()


def recover(target: Path) -> list[str]:
    """Undo what an interrupted update left beside ``target``; say what was done.

    Does nothing while another process holds the update lock (its files are live) or
    where the lock cannot be taken (a read-only copy, e.g. an installed bundle).
    """
    target = Path(target)
    if not any(_sibling(target, role).exists() for role in ("staging", "old")):
        return []
    from filelock import Timeout

    try:
        with lock_for(target).acquire(timeout=0):
            return _recover_locked(target)
    except (Timeout, OSError):
        return []


def _recover_locked(target: Path) -> list[str]:
    notes = []
    old, staging = _sibling(target, "old"), _sibling(target, "staging")
    if old.exists():
        if target.exists():
            _rmtree(old)
        else:
            os.rename(old, target)
            notes.append(f"{target}: restored the previous set after an interrupted update")
    if staging.exists():
        _rmtree(staging)
        notes.append(f"{staging}: removed the staging folder of an interrupted update")
    return notes


def _swap(staging: Path, target: Path) -> None:
    if not target.exists():
        os.rename(staging, target)
    elif _exchange(staging, target):
        _rmtree(staging)  # now holds the old set
    else:
        old = _sibling(target, "old")
        os.rename(target, old)
        os.rename(staging, target)
        _rmtree(old)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2``); False where unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    code = renameat2(
        _AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), ctypes.c_uint(_RENAME_EXCHANGE)
    )
    if code == 0:
        return True
    number = ctypes.get_errno()
    if number in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(number, os.strerror(number), str(b))


def _rmtree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
