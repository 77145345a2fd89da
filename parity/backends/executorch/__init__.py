"""The ExecuTorch route: the card's torch module exported to a ``.pte`` program, no twin.

``torch.export`` -> ``to_edge`` -> ``.pte`` in the torch worker (the exporter needs the
module), lowered two ways: with the XNNPACK delegate (what a mobile app ships) and with
ExecuTorch's portable kernels only (the reference kernels). ExecuTorch's Python runtime
(``executorch.runtime``) runs them in this backend's worker. The card's taps are extra
outputs of the exported program (:mod:`.convert`), so each tap is located by construction.
"""

from __future__ import annotations

from parity.backends import Backend, Exporter, Variant

_TAPS = "the card's taps exported as extra outputs of the program (forward hooks at export)"
#: Each lowering of the exported program and what runs it.
LOWERINGS = {
    "xnnpack": "ExecuTorch runtime, XNNPACK delegate (XnnpackPartitioner)",
    "portable": "ExecuTorch runtime, portable kernels only (no delegate)",
}


def _exporter(lowering: str) -> Exporter:
    return Exporter(
        f"executorch_{lowering}", "parity.backends.executorch.convert:export_pte", "model.pte",
        ("torch", "executorch"), options={"lowering": lowering},
        imports=("torch", "executorch"), worker="torch", keyed_on_taps=True,
    )  # fmt: skip


def _variant(lowering: str, what: str) -> Variant:
    return Variant(
        f"executorch_{lowering}", "executorch",
        "parity.backends.executorch.runner:ExecuTorchRunner", f"executorch_{lowering}", what,
        "executorch", taps=_TAPS,
    )  # fmt: skip


BACKEND = Backend(
    name="executorch",
    description="needs ExecuTorch (torch.export -> .pte, XNNPACK or portable kernels)",
    extra="executorch",
    imports=("executorch",),
    variants=tuple(_variant(lowering, what) for lowering, what in LOWERINGS.items()),
    exporters=tuple(_exporter(lowering) for lowering in LOWERINGS),
    versions=("executorch",),
)
