"""The ExecuTorch exporters (run in the torch worker): the card's taps as program outputs.

The module is wrapped to return ``(output, *taps)`` (:mod:`parity.backends.torch.tapped`).
``torch.export`` traces the wrapper (batch 1, the card's input shape), ``to_edge`` makes
the edge program, and it is lowered:

* ``xnnpack``: ``to_edge_transform_and_lower`` with ``XnnpackPartitioner`` (the
  partitioner folds BatchNorm into the convolutions and hands XNNPACK what it supports);
* ``portable``: ``to_edge(...).to_executorch()``, every op on ExecuTorch's portable kernels.

Each tap is an output of the program, so it is located by construction; its index is in
the artifact's ``runner_options``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parity import lazy
from parity.backends.torch.tapped import EVIDENCE, PROGRAM_OUTPUT, tapped
from parity.errors import ParityError
from parity.quiet import quiet
from parity.runner import OUTPUT
from parity.tapmatch import TapMatch

if TYPE_CHECKING:
    from parity.backends import ExportContext


def _lower(program: Any, lowering: str) -> Any:
    """The exported program as an ExecuTorch program (``.buffer`` is the ``.pte``)."""
    exir = lazy.require("executorch.exir")
    if lowering == "xnnpack":
        partitioner = lazy.require(
            "executorch.backends.xnnpack.partition.xnnpack_partitioner"
        ).XnnpackPartitioner()
        return exir.to_edge_transform_and_lower(program, partitioner=[partitioner]).to_executorch()
    if lowering == "portable":
        return exir.to_edge(program).to_executorch()
    raise ParityError(f"unknown ExecuTorch lowering {lowering!r}; known: xnnpack, portable")


def _delegated(program: Any) -> dict[str, Any]:
    """How many delegate calls the program's graph makes, and the ops left to kernels (not
    the ``getitem`` unpacking a delegate's outputs nor memory planning's ``alloc``: those
    have no operator schema)."""
    calls = [n for n in program.exported_program().graph.nodes if n.op == "call_function"]
    delegate = sum(1 for n in calls if "call_delegate" in str(n.target))
    kernels = Counter(str(n.target) for n in calls if hasattr(n.target, "_schema"))
    return {"delegate_calls": delegate, "kernel_ops": dict(sorted(kernels.items()))}


def _outside(lowering: str, converter: Mapping[str, Any]) -> list[str]:
    """A note naming the ops XNNPACK's partitioner left to the portable kernels, if any."""
    ops = converter["kernel_ops"]
    if lowering != "xnnpack" or not ops:
        return []
    listed = ", ".join(f"{op} x{count}" for op, count in ops.items())
    return [f"executorch_xnnpack: ops outside the XNNPACK delegate (portable kernels): {listed}"]


def export_pte(ctx: ExportContext, out: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """Export the card's module with its taps as outputs and lower it to ``out`` (a .pte)."""
    torch = lazy.torch()
    lowering = str(options["lowering"])
    taps = ctx.card.taps
    wrapper = tapped(ctx.model().module, taps)
    example = (torch.zeros((1, *ctx.card.input_shape[1:])),)
    try:
        with torch.no_grad():
            wrapper(*example)  # the outputs' order (a trace leaves ``index`` empty)
        outputs = {OUTPUT: 0, **wrapper.index}
        start = time.perf_counter()
        with quiet():
            exported = torch.export.export(wrapper, example)
        exported_seconds = time.perf_counter() - start
        with quiet():
            program = _lower(exported, lowering)
        out.write_bytes(program.buffer)
    finally:
        wrapper.remove()
    seconds = time.perf_counter() - start
    version = lazy.package_version("executorch")
    summary = f"taps: {len(taps)} of {len(taps)} compared ({len(taps)} {PROGRAM_OUTPUT})"
    converter = {
        "lowering": lowering,
        "export_seconds": round(exported_seconds, 3),
        "convert_seconds": round(seconds, 3),
        "pte_bytes": out.stat().st_size,
        **_delegated(program),
    }
    return {
        "exporter": f"torch.export + executorch {version} ({lowering})",
        "converter": converter,
        "runner_options": {"outputs": outputs},
        "tap_matching": [
            TapMatch(t.name, PROGRAM_OUTPUT, f"output {outputs[t.name]}", None, EVIDENCE).to_dict()
            for t in taps
        ],
        "tap_summary": summary,
        "notes": [f"executorch_{lowering}: {summary}", *_outside(lowering, converter)],
    }
