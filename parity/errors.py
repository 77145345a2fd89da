"""User-facing errors.

Every error a user can meet is a :class:`ParityError`: one line saying what is wrong,
where, and what to do. The CLI prints it and exits with code 2; nothing else in parity
turns an exception into a message.
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


class MissingRuntimeError(ParityError):
    """A runtime's Python package is not installed in this environment."""


class WeightTransferError(ParityError):
    """A torch state_dict does not map one-to-one onto a Keras twin."""
