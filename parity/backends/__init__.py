"""The backend registry: everything parity knows about one runtime, in one package.

A backend (``parity/backends/<name>/``) declares a :class:`Backend`: its variants (data),
the exporters whose artifacts its framework makes, the probe that reads a file made
elsewhere, the pytest marker, the extra that installs it and the modules it imports.
Backends are registered by one entry point each in the ``parity.backends`` group::

    [project.entry-points."parity.backends"]
    litert = "parity.backends.litert:BACKEND"

so a third-party package adds a backend without editing parity. Every list of families
(variants, markers, extras, probes, CLI choices, bundle versions) is derived from here.
Loading the registry imports the backend packages only: no framework.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.metadata
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from parity.errors import ParityError

if TYPE_CHECKING:
    import numpy as np

    from parity.exported import Artifact
    from parity.weights import Weights
    from parity.zoo import ModelCard

#: Entry-point group a backend registers in.
GROUP = "parity.backends"

#: What a variant runs on: the torch module itself, an artifact parity exports, a file
#: made elsewhere (``parity run --artifact``).
RunsOn = Literal["module", "artifact", "file"]

#: Precision classes a variant computes in. Budgets are judged per class: an fp32 rule
#: never judges (or is measured from) a bf16 run. ``tf32`` is what CUDA convolutions run in
#: under torch's defaults; ``dynamic-range`` is int8 weights with float activations.
PRECISION_CLASSES = ("fp32", "tf32", "bf16", "fp16", "int8", "dynamic-range")


class ExportContext(Protocol):
    """What an exporter function may ask for (:class:`parity.artifacts.BuildContext` is one;
    a Protocol, so the registry does not import the cache, which imports the registry)."""

    card: ModelCard

    def model(self) -> Weights:
        """The weights under test (the torch module in the torch worker)."""
        ...

    def artifact(self, exporter: str) -> Artifact:
        """An upstream artifact, built or read from the cache."""
        ...

    def calibration_batch(self) -> np.ndarray:
        """The calibration images through the card's preprocessing, NCHW float32."""
        ...


ExportFunction = Callable[["ExportContext", Path, Mapping[str, Any]], dict[str, Any]]


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
        keyed_on_cpu: its file holds machine code compiled for this CPU, so the CPU's ISA
            (:func:`parity.isa.kernel_isa`) is part of its cache key.
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
    keyed_on_cpu: bool = False
    handoff: tuple[str, ...] = ()
    card_key: tuple[str, str] | None = None
    converter: str | None = None

    def function(self) -> ExportFunction:
        module, _, attr = self.target.partition(":")
        fn: ExportFunction = getattr(importlib.import_module(module), attr)
        return fn


@dataclasses.dataclass(frozen=True)
class Variant:
    """One way of running the model.

    Attributes:
        name: registry name, used in reports, budgets and test ids (``ort_dynamo``).
        family: the backend that runs it (pytest marker, ``--runtime`` shorthand).
        runner: ``module:Class`` of the :class:`~parity.runner.Runner`.
        exporter: name of the artifact it runs (``None`` for the torch reference).
        description: one line for ``parity list``.
        module: the Python module the family needs installed.
        options: keyword arguments for the runner.
        reference: this variant's outputs are the reference others are compared with
            (a compiled or GPU torch variant is not: it is judged like any other).
        runs_on: ``"module"``, ``"artifact"`` or ``"file"``.
        taps: how it locates taps (one line, for ``parity list``).
        machine: ``module:function`` taking :attr:`options` and returning why this machine
            cannot run the variant (no CUDA GPU), or ``None``.
        precision: the precision class it is meant to compute in (one of
            :data:`PRECISION_CLASSES`): the class of the budgets that judge it. What it
            actually ran in, where the runtime says, is the runner's ``executed``.
    """

    name: str
    family: str
    runner: str
    exporter: str | None
    description: str
    module: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    reference: bool = False
    runs_on: RunsOn = "artifact"
    taps: str = ""
    machine: str | None = None
    precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.precision not in PRECISION_CLASSES:
            raise ParityError(
                f"variant {self.name!r}: precision {self.precision!r} is not one of "
                f"{', '.join(PRECISION_CLASSES)}"
            )

    def runner_class(self) -> type:
        module, _, cls = self.runner.partition(":")
        runner_cls: type = getattr(importlib.import_module(module), cls)
        return runner_cls

    def unavailable(self) -> str | None:
        """Why this machine cannot run the variant (an ``n/a`` row), or ``None``."""
        if self.machine is None:
            return None
        module, _, function = self.machine.partition(":")
        reason: str | None = getattr(importlib.import_module(module), function)(self.options)
        return reason


@dataclasses.dataclass(frozen=True)
class Backend:
    """One runtime as parity knows it.

    Attributes:
        name: family name: pytest marker, ``--runtime`` shorthand, worker name.
        description: one line (the pytest marker's help).
        extra: the ``pip install 'parity[extra]'`` that installs it.
        imports: the modules its worker imports (the first is the one that must be
            installed for its variants to run).
        variants: its variants, in listing order.
        exporters: the artifacts its framework makes (exported in its worker).
        probe: ``module:Class`` of the :class:`~parity.detect.Probe` reading a file made
            elsewhere, or ``None`` when it cannot run foreign files.
        suffixes: file suffixes its probe reads (``.tflite``).
        versions: distributions whose versions a bundle records.
        preload: modules every worker of this backend imports and that take seconds to:
            imported once by a resident process that forks its workers
            (:mod:`parity.forkserver`); empty: its workers fork from one that imported
            parity's worker (and numpy) only, and import their runtime themselves.
    """

    name: str
    description: str
    extra: str
    imports: tuple[str, ...]
    variants: tuple[Variant, ...] = ()
    exporters: tuple[Exporter, ...] = ()
    probe: str | None = None
    suffixes: tuple[str, ...] = ()
    versions: tuple[str, ...] = ()
    preload: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        """The module whose presence means the backend is installed."""
        return self.imports[0]

    def probe_class(self) -> Any:
        if self.probe is None:
            raise ParityError(f"backend {self.name!r} cannot read files made elsewhere")
        module, _, cls = self.probe.partition(":")
        return getattr(importlib.import_module(module), cls)


@functools.cache
def backends() -> dict[str, Backend]:
    """Every registered backend by name, the reference's backend first."""
    found: dict[str, Backend] = {}
    for entry in importlib.metadata.entry_points(group=GROUP):
        if entry.name in found:
            continue  # the same distribution seen twice on sys.path
        backend = entry.load()
        if not isinstance(backend, Backend) or backend.name != entry.name:
            raise ParityError(
                f"entry point {entry.name} = {entry.value!r} in group {GROUP!r} is not a "
                f"parity.backends.Backend named {entry.name!r}"
            )
        found[entry.name] = backend
    if not found:
        raise ParityError(
            f"no backend registered in the entry-point group {GROUP!r}: parity's metadata is "
            "missing or stale; reinstall it (pip install -e .)"
        )
    return dict(sorted(found.items(), key=lambda kv: not any(v.reference for v in kv[1].variants)))


def backend(name: str) -> Backend:
    if name not in backends():
        raise ParityError(f"unknown runtime family {name!r}; known: {', '.join(backends())}")
    return backends()[name]


@functools.cache
def variants() -> dict[str, Variant]:
    """Every registered variant by name, in backend then declaration order."""
    found: dict[str, Variant] = {}
    for b in backends().values():
        for v in b.variants:
            if v.name in found:
                raise ParityError(f"variant {v.name!r} is registered by two backends")
            if v.family != b.name:
                raise ParityError(
                    f"variant {v.name!r} of backend {b.name!r} says family {v.family!r}"
                )
            found[v.name] = v
    return found


@functools.cache
def exporters() -> dict[str, Exporter]:
    """Every exporter by name."""
    return {e.name: e for b in backends().values() for e in b.exporters}


def export_chain(exporter: str) -> list[str]:
    """``exporter`` and every exporter its artifact is built from, in build order (the
    upstream artifacts first, ``exporter`` last)."""
    names = [exporter]
    for upstream in get_exporter(exporter).requires:
        names = export_chain(upstream) + names
    return names


def maker(exporter: str) -> Backend:
    """The backend whose worker makes ``exporter``'s artifact: the one declaring it, or the
    one it names as its :attr:`Exporter.worker`."""
    for b in backends().values():
        for e in b.exporters:
            if e.name == exporter:
                return backend(e.worker) if e.worker else b
    raise ParityError(f"unknown exporter {exporter!r}; known: {', '.join(exporters())}")


def reference() -> Variant:
    """The one reference variant (torch eager)."""
    found = [v for v in variants().values() if v.reference]
    if len(found) != 1:
        raise ParityError(f"exactly one reference variant must be registered, found {found}")
    return found[0]


def precision_of(variant: str) -> str:
    """The precision class of a registered variant; ``fp32`` for any other name (a file made
    elsewhere is judged as the fp32 model it claims to be)."""
    found = variants().get(variant)
    return found.precision if found is not None else "fp32"


def extras() -> dict[str, str]:
    """Importable module -> the extra that installs it."""
    return {m: b.extra for b in backends().values() for m in b.imports}


def extra_for(module: str) -> str:
    """The parity extra that installs ``module`` (``all`` when none is specific)."""
    return extras().get(module.split(".")[0], "all")


def markers() -> dict[str, str]:
    """pytest marker -> description, one per backend."""
    return {b.name: b.description for b in backends().values()}


def get_exporter(name: str) -> Exporter:
    """The exporter registered under ``name`` by the backend whose framework makes it."""
    if name not in exporters():
        raise ParityError(f"unknown exporter {name!r}; known: {', '.join(exporters())}")
    return exporters()[name]
