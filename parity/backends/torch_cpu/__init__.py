"""torch on the CPU, not as the reference: ``torch.compile`` (inductor) and bf16 autocast.

Each runs on its own copy of the module (the torch backend's runner with options) and is
judged against the eager reference like any runtime; taps by the same forward hooks,
which inductor traces into its graph (every tap survives compilation).
"""

from __future__ import annotations

from parity.backends import Backend, Variant

_TORCH = "parity.backends.torch.runner:TorchRunner"
_HOOKS = "forward hooks on the named modules (traced into the compiled graph)"

BACKEND = Backend(
    name="torch_cpu",
    description="torch variants on the CPU that are not the reference (torch.compile, bf16)",
    extra="torch",
    imports=("torch", "torchvision"),
    variants=(
        Variant("torch_compile", "torch_cpu", _TORCH, None,
                "torch.compile (inductor, C++ codegen) on the CPU, fp32", "torch",
                {"compile": True}, runs_on="module", taps=_HOOKS),
        Variant("torch_cpu_bf16", "torch_cpu", _TORCH, None,
                "torch eager on the CPU under autocast bfloat16", "torch",
                {"autocast": "bfloat16"}, runs_on="module", taps=_HOOKS, precision="bf16"),
    ),
)  # fmt: skip
