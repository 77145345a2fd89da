"""Which backend reads a file made elsewhere: the runtime from its bytes, and its variant.

Each backend's :class:`~parity.detect.Probe` recognises its own files, cross-checked with
the suffix and ``--artifact-runtime``; :mod:`parity.detect` then reads what the file says
about itself. This is the registry's side of that check (:mod:`parity.detect` and the probes
know no registry).
"""

from __future__ import annotations

from pathlib import Path

from parity.backends import Backend, Variant, backend, backends
from parity.detect import Probe
from parity.errors import ArtifactError, ParityError


def readers() -> dict[str, Backend]:
    """The backends that can run a file made elsewhere (those with a probe)."""
    return {b.name: b for b in backends().values() if b.probe is not None}


def sniff_runtime(path: Path, declared: str | None = None) -> tuple[str, str]:
    """(runtime, what the bytes are) for ``path``; a one-line error for anything else.

    Each backend's probe recognises its own files (:meth:`Probe.recognise`); probes whose
    format has no magic number (ONNX) are asked last.
    """
    known = readers()
    if declared is not None and declared not in known:
        raise ParityError(f"unknown --artifact-runtime {declared!r}; known: {', '.join(known)}")
    if not path.is_file():
        raise ArtifactError(f"{path}: artifact file not found")
    with path.open("rb") as handle:
        head = handle.read(16)
    suffix = path.suffix.lower()
    by_suffix = next((b.name for b in known.values() if suffix in b.suffixes), None)
    probes: list[type[Probe]] = sorted(
        (b.probe_class() for b in known.values()), key=lambda p: p.weak_magic
    )
    found: tuple[str, str] | None = None
    for probe in probes:
        what = probe.recognise(path, head, declared or by_suffix)
        if what is not None:
            found = (probe.runtime, what)
            break
    if found is None:
        labels = sorted(b.probe_class().label for b in known.values())
        names = ", ".join(labels[:-1]) + f" or {labels[-1]}" if len(labels) > 1 else labels[0]
        raise ParityError(
            f"{path}: not a {names} model (starts with {head[:12]!r}); parity reads "
            + ", ".join(p.kind for p in probes)
        )
    runtime, what = found
    if declared is not None and declared != runtime:
        raise ParityError(f"{path}: --artifact-runtime {declared}, but the file is a {what}")
    if by_suffix is not None and by_suffix != runtime:
        raise ParityError(f"{path}: named {path.suffix} but the file is a {what}")
    return runtime, what


def external_variant(path: Path, runtime: str, what: str = "") -> Variant:
    """The variant of a file made elsewhere: ``external_<runtime>``, run on the file."""
    about = f" ({what})" if what else ""
    return Variant(
        f"external_{runtime}",
        runtime,
        "parity.external:ExternalRunner",
        None,
        f"{path.name}{about}, made elsewhere",
        backend(runtime).module,
        runs_on="file",
    )
