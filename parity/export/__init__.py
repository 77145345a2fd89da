"""Exporters: torch model -> artifact files, registered by name.

An exporter is a function ``export(ctx, out_dir) -> metadata`` that writes its files into
``out_dir``; :mod:`parity.artifacts` caches the result by a content key (weights hash,
preprocessing hash, exporter name and options, package versions, upstream artifacts).
Adding an exporter is one function plus one :class:`Exporter` in the backend whose
framework makes it (:mod:`parity.backends`).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from parity.artifacts import BuildContext

ExportFunction = Callable[["BuildContext", Path, Mapping[str, Any]], dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class Exporter:
    """A named way to make one artifact.

    Attributes:
        name: registry name, also the cache folder name.
        target: ``module:function`` implementing it (imported only when used).
        filename: the main file it writes into its output folder.
        packages: distributions whose versions are part of the cache key.
        requires: exporters whose artifacts this one is built from.
        options: passed to the function; part of the cache key.
        imports: Python modules it imports (an ``n/a`` reason names a missing one).
        worker: the backend whose worker makes it, when not the one declaring it (a
            converter that needs the torch module is made in the ``torch`` worker).
        keyed_on_taps: its file records where the card's taps are, so the card's taps
            are part of its cache key.
        handoff: what the torch worker hands it as files, for a worker without torch:
            ``"state_dict"`` (the weights as ``state_dict.npz``).
        card_key: the model-card key its artifact is built from and what it names, e.g.
            ``("keras_twin", "Keras twin")``: on a card without it, the variants of this
            artifact and of every artifact made from it are ``n/a``.
        converter: the converter environment it runs in as a subprocess
            (:mod:`parity.converters`): its variants are ``n/a`` until that is made, and
            the environment's key is part of the artifact's cache key.
    """

    name: str
    target: str
    filename: str
    packages: tuple[str, ...]
    requires: tuple[str, ...] = ()
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    imports: tuple[str, ...] = ()
    worker: str | None = None
    keyed_on_taps: bool = False
    handoff: tuple[str, ...] = ()
    card_key: tuple[str, str] | None = None
    converter: str | None = None

    def function(self) -> ExportFunction:
        module, _, attr = self.target.partition(":")
        fn: ExportFunction = getattr(importlib.import_module(module), attr)
        return fn
