"""torch on the CPU, not as the reference: ``torch.compile`` (inductor) and bf16 autocast.

Each is judged against the eager reference like any runtime. ``torch_compile`` runs the
module compiled once by inductor into a cached AOTInductor package (:mod:`.compile`), its
taps traced as outputs of the compiled program; ``torch_cpu_bf16`` runs a copy of the
module (the torch backend's runner with options), taps by forward hooks.
"""

from __future__ import annotations

from parity.backends import Backend, Exporter, Variant

_TORCH = "parity.backends.torch.runner:TorchRunner"
_HOOKS = "forward hooks on the named modules"
_TRACED = "forward hooks at export, the taps traced as outputs of the compiled program"

BACKEND = Backend(
    name="torch_cpu",
    description="torch variants on the CPU that are not the reference (torch.compile, bf16)",
    extra="torch",
    imports=("torch", "torchvision"),
    variants=(
        Variant("torch_compile", "torch_cpu", "parity.backends.torch_cpu.runner:CompiledRunner",
                "torch_compile", "torch.compile (inductor, C++ codegen) on the CPU, fp32, "
                "compiled once (AOTInductor package, cached per CPU ISA)", "torch", taps=_TRACED),
        Variant("torch_cpu_bf16", "torch_cpu", _TORCH, None,
                "torch eager on the CPU under autocast bfloat16", "torch",
                {"autocast": "bfloat16"}, runs_on="module", taps=_HOOKS, precision="bf16"),
    ),
    exporters=(
        Exporter("torch_compile", "parity.backends.torch_cpu.compile:export_compiled",
                 "model.pt2", ("torch",), imports=("torch",), worker="torch",
                 keyed_on_taps=True, keyed_on_cpu=True),
    ),
    preload=("torch",),  # with torchvision (parity.lazy.torch)
)  # fmt: skip
