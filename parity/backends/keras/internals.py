"""The one place parity reads Keras 3's private graph attributes, guarded.

Keras has no public call for a functional model's nodes in depth order, for the operation
that produced a symbolic tensor, nor for a layer's inputs; parity reads
``Model._nodes_by_depth``, ``KerasTensor._keras_history`` and ``Layer._inbound_nodes``. A
release that drops or renames them is an environment problem with one clear line, not an
``AttributeError`` deep in a runner.
"""

from __future__ import annotations

from typing import Any

from parity.errors import ParityError
from parity.lazy import package_version

#: The Keras release these internals were read from (pyproject's pin).
TESTED = "3.15.1"


def _missing(what: str) -> ParityError:
    return ParityError(
        f"keras {package_version('keras')}: {what} is gone (parity reads a functional "
        f"model's graph through it; read from {TESTED}); install that version: "
        f"pip install 'keras=={TESTED}'"
    )


def nodes_by_depth(model: Any) -> dict[int, list[Any]]:
    """A functional model's nodes by depth (``Model._nodes_by_depth``)."""
    nodes: dict[int, list[Any]] | None = getattr(model, "_nodes_by_depth", None)
    if nodes is None:
        raise _missing("Model._nodes_by_depth")
    return nodes


def producer(tensor: Any) -> Any:
    """The operation (layer) that produced a symbolic tensor (``_keras_history``)."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        raise _missing("KerasTensor._keras_history")
    return history.operation


def first_call_inputs(layer: Any) -> list[Any]:
    """The symbolic tensors a layer was first called on (none for an input layer)."""
    nodes = getattr(layer, "_inbound_nodes", None)
    if nodes is None:
        raise _missing("Layer._inbound_nodes")
    return list(nodes[0].input_tensors) if nodes else []
