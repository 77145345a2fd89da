"""User-facing errors, and how each kind of failure is classified.

* :class:`ParityError`: bad input or environment (a user's file, card, path, a full
  disk): one line saying what is wrong, where, and what to do; the CLI exits 2.
* :class:`RuntimeFailure`: a runtime refused or crashed on an artifact parity built:
  not bad input but a failed variant, reported in its row; the run exits 1.
* anything else is a bug in parity: the CLI writes the traceback to a file, prints
  where, and exits 3 (never 1, which means "a budget broken or a runtime failed").
"""

from __future__ import annotations


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
    """A runtime failed on an artifact parity built (a failed variant, exit 1)."""


class MissingRuntimeError(ParityError):
    """A runtime's Python package is not installed in this environment."""


class WeightTransferError(ParityError):
    """A torch state_dict does not map one-to-one onto a Keras twin."""
