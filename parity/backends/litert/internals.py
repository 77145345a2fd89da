"""The one place parity reads LiteRT's private interpreter API, guarded.

LiteRT has no public call for the list of ops of a model; parity reads it through
``Interpreter._get_ops_details`` (op names, the tensors they read and write). A release
that drops or renames it is an environment problem with one clear line, not a crash.
"""

from __future__ import annotations

from typing import Any

from parity.errors import ParityError
from parity.lazy import package_version

#: The ai-edge-litert release these internals were read from (pyproject's pin).
TESTED = "2.3.0"


def ops_details(interpreter: Any) -> list[dict[str, Any]]:
    """Every op of the interpreter's model: ``op_name``, ``inputs``, ``outputs`` (indices)."""
    read = getattr(interpreter, "_get_ops_details", None)
    if read is None:
        raise ParityError(
            f"ai-edge-litert {package_version('ai-edge-litert')}: Interpreter._get_ops_details "
            f"is gone (parity reads a model's ops through it; read from {TESTED}); install "
            f"that version: pip install 'ai-edge-litert=={TESTED}'"
        )
    details: list[dict[str, Any]] = read()
    return details
