"""Writes that either land whole or leave nothing behind (numpy-free).

Every file parity writes (reports, JSON, goldens, cached weights and artifacts) goes
through :func:`replacing`: the bytes go to a hidden temporary file beside the target,
which is renamed over it only once complete. Any failure (disk full, a path under an
existing file, no permission, an interrupt) removes the temporary file; an ``OSError``
becomes one :class:`~parity.errors.ParityError` line naming the path and the cause.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from parity.errors import ParityError


def temporary_name(path: Path) -> Path:
    """The hidden sibling a write of ``path`` goes through (unique per process)."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def write_error(path: Path, exc: OSError) -> ParityError:
    """One line for a failed write: the target and the system's reason."""
    reason = exc.strerror or str(exc)
    return ParityError(f"{path}: cannot write ({reason}); nothing was left half-written")


@contextlib.contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` atomically.

    The temporary may be a file or a folder; whatever the body leaves there is removed
    if it raises (or is interrupted).
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove(tmp)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        _remove(tmp)
        raise write_error(path, exc) from None
    except BaseException:
        _remove(tmp)
        raise


def write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all."""
    with replacing(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` whole or not at all."""
    write_bytes(path, text.encode("utf-8"))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError, OSError):
            path.unlink()
