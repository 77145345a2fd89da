"""User-facing errors, and how each kind of failure is classified.

* :class:`ParityError`: bad input or environment (a user's file, card, path, a full
  disk): one line saying what is wrong, where, and what to do; the CLI exits 2.
* :class:`RuntimeFailure`: a runtime or converter refused or crashed on an artifact:
  not bad input but a failed variant, reported in its row; the run exits 1. Raised only
  where parity calls into a framework (:func:`runtime_failure`), or for a worker that
  died, hung or ran out of time.
* anything else is a bug in parity, in this process or in a worker (whose traceback
  comes back with it): the CLI writes the traceback to a file, prints where, and exits 3
  (never 1, which means "a budget broken or a runtime failed").
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from parity.exported import Artifact


class ParityError(Exception):
    """A problem with the user's input or environment (exit code 2)."""


class FixtureError(ParityError):
    """A fixture image or manifest is missing, corrupt or unreadable."""


class ModelCardError(ParityError):
    """A model card is unknown or malformed."""


class WeightsError(ParityError):
    """Model weights cannot be loaded."""


class ArtifactError(ParityError):
    """An exported artifact is missing, corrupt or cannot be opened."""


class TapError(ParityError):
    """A logical tap does not resolve to exactly one tensor in a runtime."""


class ToleranceError(ParityError):
    """The tolerance table is malformed."""


class RuntimeFailure(Exception):
    """A runtime or converter failed on an artifact (refused it, raised, crashed, timed out):
    a failed variant (exit 1). The message says how, and names the artifact and the phase."""

    def __init__(self, message: str, artifact: Artifact | None = None) -> None:
        super().__init__(message)
        self.artifact = artifact


#: What the machine refuses, not parity nor the runtime: a full disk or quota, a file over
#: the size limit, a read-only or forbidden folder.
REFUSED_BY_THE_MACHINE = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
)


def environment_error(exc: BaseException, doing: str = "writing") -> ParityError | None:
    """An ``OSError`` the machine raised (:data:`REFUSED_BY_THE_MACHINE`) as one line naming
    the file, else what was being done; ``None`` for anything else."""
    if not isinstance(exc, OSError) or exc.errno not in REFUSED_BY_THE_MACHINE:
        return None
    where = exc.filename or doing
    return ParityError(
        f"{where}: {exc.strerror} (a full disk, or a folder parity may not write: free space "
        "or make it writable; PARITY_CACHE_DIR moves the cache)"
    )


@contextlib.contextmanager
def runtime_failure(what: str) -> Iterator[None]:
    """Around one call into a framework: whatever it raises is :class:`RuntimeFailure`
    ``"<what>: <type>: <first line>"`` (the runtime failed, not parity); parity's own
    errors pass through. Wrap only the framework's call: parity's code around it must
    stay outside, so that its bugs remain bugs (exit 3)."""
    try:
        yield
    except (ParityError, RuntimeFailure):
        raise
    except Exception as exc:
        refused = environment_error(exc, what)  # a full disk while it writes: not its fault
        if refused is not None:
            raise refused from exc
        text = str(exc).strip()
        first = text.splitlines()[0] if text else ""
        raise RuntimeFailure(f"{what}: {type(exc).__name__}: {first}".rstrip(": ")) from exc


class WorkerBug(Exception):
    """An exception from parity's own code in a worker process (exit 3); ``__cause__``
    holds the worker's traceback, so the traceback file shows where it was raised."""


class WorkerTraceback(Exception):
    """The text of a worker's traceback, as the cause of a :class:`WorkerBug`."""

    def __str__(self) -> str:
        return f"\n\n{self.args[0]}"


class MissingRuntimeError(ParityError):
    """A runtime's Python package is not installed in this environment."""


class WeightTransferError(ParityError):
    """A torch state_dict does not map one-to-one onto a Keras twin."""
