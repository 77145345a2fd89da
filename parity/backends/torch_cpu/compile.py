"""The ``torch_compile`` artifact: the card's module compiled by inductor, once, as an
AOTInductor package (``model.pt2``) in the artifact cache (made in the torch worker).

``torch.compile`` in every run spent ~10 s of a warm run re-tracing the module with
dynamo (inductor's own caches hit; the tracing is the cost). Here the module, wrapped to
return ``(output, *taps)`` (:mod:`parity.backends.torch.tapped`), is traced once by
``torch.export`` (a dynamic batch axis) and compiled by inductor's C++ backend into
``model.pt2``; a warm run loads it (:mod:`.runner`) and compiles nothing. Inductor
lowers the same graph with the same kernels as ``torch.compile``: every tap of
mobilenet_v2 is bitwise the JIT-compiled one on this machine (``bench/compile_cache.md``).

The kernels are machine code for this CPU's vector ISA: the cache key holds the ISA
(:func:`parity.isa.kernel_isa`) and the package records the one inductor picked
(``vec_isa``), which the runner checks before running it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parity import lazy
from parity.backends.torch.tapped import EVIDENCE, PROGRAM_OUTPUT, tapped
from parity.errors import runtime_failure
from parity.quiet import quiet
from parity.runner import OUTPUT
from parity.tapmatch import TapMatch

if TYPE_CHECKING:
    from parity.backends import ExportContext

#: The example batch traced (its size is a hint only: the batch axis is dynamic).
EXAMPLE_BATCH = 16
#: Largest batch the package accepts.
MAX_BATCH = 4096


def vec_isa() -> str:
    """The vector ISA inductor compiles this process's CPU kernels for (``avx2``, ...)."""
    lazy.torch()
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    return str(pick_vec_isa())


def export_compiled(ctx: ExportContext, out: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    """Compile the card's module with its taps as outputs into ``out`` (an AOTInductor
    package); ``options`` are ``torch._inductor.config`` settings (none: the defaults)."""
    torch = lazy.torch()
    taps = ctx.card.taps
    wrapper = tapped(copy.deepcopy(ctx.model().module), taps)
    example = (torch.zeros((EXAMPLE_BATCH, *ctx.card.input_shape[1:])),)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        wrapper(*example)  # the outputs' order (a trace leaves ``index`` empty)
    outputs = {OUTPUT: 0, **wrapper.index}
    start = time.perf_counter()
    with runtime_failure("torch.export of the tapped module failed"), quiet(), torch.no_grad():
        program = torch.export.export(wrapper, example, dynamic_shapes=({0: batch},))
    traced = time.perf_counter() - start
    with runtime_failure("AOTInductor failed compiling the module"), quiet():
        torch._inductor.aoti_compile_and_package(
            program, package_path=str(out), inductor_configs=dict(options) or None
        )
    summary = f"taps: {len(taps)} of {len(taps)} compared ({len(taps)} {PROGRAM_OUTPUT})"
    isa = vec_isa()
    return {
        "exporter": f"torch.export + AOTInductor (torch {lazy.package_version('torch')})",
        "converter": {
            "export_seconds": round(traced, 3),
            "compile_seconds": round(time.perf_counter() - start - traced, 3),
            "vec_isa": isa,
        },
        "runner_options": {"outputs": outputs, "vec_isa": isa},
        "tap_matching": [
            TapMatch(t.name, PROGRAM_OUTPUT, f"output {outputs[t.name]}", None, EVIDENCE).to_dict()
            for t in taps
        ],
        "tap_summary": summary,
    }
