"""torch on a CUDA GPU: strict fp32, TF32 (torch's defaults), channels_last, autocast, compile.

Without a usable GPU every variant is ``n/a`` with the reason. ``torch_cuda_tf32`` is
what users get by default (cuDNN convolutions in TF32); ``torch_cuda_fp32`` turns TF32
off, and the doctor's ``tf32`` check compares the two.
"""

from __future__ import annotations

from typing import Any

from parity.backends import Backend, Variant

_TORCH = "parity.backends.torch.runner:TorchRunner"
_STRICT = {"tf32": False}
_MODES: dict[str, tuple[str, dict[str, Any]]] = {
    "fp32": ("eager fp32, TF32 off (cudnn/matmul allow_tf32 = False)", _STRICT),
    "tf32": ("eager fp32 with torch's defaults (cuDNN convolutions in TF32)", {"tf32": True}),
    "channels_last": ("eager fp32, channels_last, TF32 off", {**_STRICT, "channels_last": True}),
    "fp16": ("eager under autocast float16", {"autocast": "float16"}),
    "bf16": ("eager under autocast bfloat16", {"autocast": "bfloat16"}),
    "compile": ("torch.compile (inductor, Triton), fp32, TF32 off", {**_STRICT, "compile": True}),
}
#: Autocast modes compute in their own class. ``tf32`` is judged as the fp32 the user asked
#: for, on purpose: torch's defaults silently run cuDNN convolutions in TF32 (reported as
#: what it executed), and the fp32 budgets are what should catch that.
_PRECISION = {"fp16": "fp16", "bf16": "bf16"}

BACKEND = Backend(
    name="torch_cuda",
    description="torch variants on a CUDA GPU (n/a, tests skipped, without one)",
    extra="torch",
    imports=("torch", "torchvision"),
    variants=tuple(
        Variant(f"torch_cuda_{mode}", "torch_cuda", _TORCH, None, f"torch on CUDA: {text}",
                "torch", {"device": "cuda", **options}, runs_on="module",
                taps="forward hooks on the named modules",
                machine="parity.backends.torch.runner:cuda_unavailable",
                precision=_PRECISION.get(mode, "fp32"))
        for mode, (text, options) in _MODES.items()
    ),
)  # fmt: skip
