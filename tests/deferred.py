"""A framework module imported where a test first uses it, not when its test module is
collected.

pytest-xdist collects every test module in every xdist worker: a module that imports
torch, TensorFlow or OpenVINO at its top made each worker hold all of them (1.3 GiB)
before its first test, though it may never run one that uses them. ``torch =
deferred("torch")`` reads like the import and imports on the first attribute looked up,
through the normal import system (so the conftest's torch-before-TensorFlow order holds,
and a missing package is an error in the test that needs it, not a skip).
"""

from __future__ import annotations

import importlib
from typing import Any


class Deferred:
    """Stands for the module ``name``: a public attribute read imports it and is that
    module's. Private and dunder names are never looked up (pytest reads ``__wrapped__``
    and ``_mock_name`` of every module-level object as it collects); a test that needs
    one imports the module itself."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        if attribute.startswith("_"):  # pytest's collection probes (__wrapped__, _mock_name)
            raise AttributeError(f"{attribute}: a deferred import answers public names only")
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"<deferred import of {self._name}>"


def deferred(name: str) -> Any:
    """The module ``name``, imported when a test first uses it (typed ``Any`` like a
    module attribute would be to mypy's eyes)."""
    return Deferred(name)
