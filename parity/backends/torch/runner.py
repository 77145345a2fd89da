"""Torch runners: the eager CPU reference, and torch variants that are not the reference.

Taps are found by forward hooks in every mode. The hooks keep the tensor itself (no host
copy inside the forward pass), so ``torch.compile`` traces them into its graph: the
tapped values become graph outputs and every tap survives compilation (measured on
mobilenet_v2 and resnet18 with torch 2.14 inductor: one graph, no graph break; see
``bench/server_floor.md``).

A variant's options (device, autocast dtype, TF32, channels_last, compile) apply to a
private copy of the module, so the reference module is never moved, converted or
compiled under another variant.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from parity import lazy
from parity.errors import ParityError, TapError, runtime_failure
from parity.runner import OUTPUT, Runner
from parity.taps import Tap

#: Autocast dtypes by option value.
AUTOCAST_DTYPES = ("bfloat16", "float16")


def cuda_unavailable(options: Mapping[str, Any] | None = None) -> str | None:
    """Why CUDA torch variants cannot run here, or ``None`` when a GPU is usable.

    ``options`` (a variant's) are accepted for the probe interface and not needed.
    """
    torch = lazy.torch()
    if not torch.cuda.is_available():
        build = torch.version.cuda
        return (
            "no CUDA GPU on this machine (torch.cuda.is_available() is False; torch "
            f"{torch.__version__}, {'CUDA ' + build + ' build' if build else 'CPU-only build'})"
        )
    return None


@contextmanager
def tf32_mode(torch: Any, enabled: bool | None) -> Iterator[None]:
    """Set cuDNN and matmul TF32 for the block (``None``: leave torch's settings alone).

    ``True`` is torch's default on CUDA: cuDNN convolutions may use TF32
    (``torch.backends.cudnn.allow_tf32`` defaults to True); ``False`` is strict fp32.
    """
    if enabled is None:
        yield
        return
    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = False  # torch's default for matmul either way
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class TorchRunner(Runner):
    """Runs a ``torch.nn.Module``; refuses one in training mode.

    Args:
        name: variant name.
        module: the model (eval mode). Left untouched unless every option is default.
        threads: intra-op CPU threads.
        device: ``"cpu"`` or ``"cuda"``.
        autocast: ``"bfloat16"`` / ``"float16"``: run under ``torch.autocast``.
        tf32: cuDNN TF32 on (torch's default) / off (strict fp32); ``None`` leaves it.
        channels_last: convert module and input to ``torch.channels_last``.
        compile: wrap the module in ``torch.compile`` (inductor).
        compile_options: ``torch._inductor.config`` settings for the compile.
    """

    input_layout = "NCHW"
    tap_layout = "NCHW"

    def __init__(
        self,
        name: str,
        module: Any,
        threads: int | None = None,
        *,
        device: str = "cpu",
        autocast: str | None = None,
        tf32: bool | None = None,
        channels_last: bool = False,
        compile: bool = False,
        compile_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name)
        if autocast is not None and autocast not in AUTOCAST_DTYPES:
            raise ValueError(f"autocast must be one of {AUTOCAST_DTYPES}, got {autocast!r}")
        self.module = module
        self.threads = threads
        self.device = device
        self.autocast = autocast
        self.tf32 = tf32
        self.channels_last = channels_last
        self.compile = compile
        self.compile_options = dict(compile_options or {})
        self._hooked: tuple[str, ...] | None = None
        self._captured: dict[str, Any] = {}
        self._handles: list[Any] = []

    @property
    def plain(self) -> bool:
        """Eager fp32 on the CPU with nothing changed: the reference's own mode."""
        return (self.device, self.autocast, self.tf32, self.channels_last, self.compile) == (
            "cpu", None, None, False, False,
        )  # fmt: skip

    def _activate(self) -> None:
        self.torch = lazy.torch()
        if self.threads:
            self.torch.set_num_threads(self.threads)
        self._check_eval()
        self.model = self.module if self.plain else copy.deepcopy(self.module)
        if self.device != "cpu":
            self.model = self.model.to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=self.torch.channels_last)
        self.forward = self.model
        if self.compile:
            self.forward = self.torch.compile(self.model, options=self.compile_options or None)
        self._hooked = None

    def _deactivate(self) -> None:
        self._unhook()
        self.model = self.forward = None

    def _check_eval(self) -> None:
        training = [name or "<root>" for name, m in self.module.named_modules() if m.training]
        if training:
            raise ParityError(
                f"{self.name}: model is in training mode ({len(training)} modules, e.g. "
                f"{training[:3]}): BatchNorm would use batch statistics and Dropout would "
                "drop; call model.eval() first"
            )

    def _hook_taps(self, taps: Sequence[Tap]) -> None:
        """Install one hook per tap, kept across runs (a compiled graph is traced with them)."""
        names = tuple(t.name for t in taps)
        if names == self._hooked:
            return
        self._unhook()
        modules = dict(self.model.named_modules())
        for tap in taps:
            if tap.module not in modules:
                raise TapError(
                    f"{self.name}: tap '{tap.name}': no module '{tap.module}' in the model"
                )
            self._handles.append(self._hook(modules[tap.module], tap, self._captured))
        self._hooked = names

    def _unhook(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._hooked = None

    def _run(self, feed: np.ndarray, taps: Sequence[Tap]) -> dict[str, np.ndarray]:
        self._check_eval()
        self._hook_taps(taps)
        self._captured.clear()
        torch = self.torch
        batch = torch.from_numpy(feed).to(self.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        dtype = getattr(torch, self.autocast) if self.autocast else None
        device_type = torch.device(self.device).type
        with (
            torch.no_grad(),
            tf32_mode(torch, self.tf32),
            torch.autocast(device_type, dtype=dtype, enabled=dtype is not None),
            runtime_failure(f"{self.name}: torch failed running the model"),
        ):
            output = self.forward(batch)
            self.executed = self._executed(output)
        result = {name: host_copy(value) for name, value in self._captured.items()}
        self._captured.clear()
        result[OUTPUT] = host_copy(output)
        return result

    def _executed(self, output: Any) -> str | None:
        """What the forward pass computed in: autocast's dtype, TF32 where cuDNN allowed it
        (read inside :func:`tf32_mode`); ``None`` for plain fp32 on the CPU."""
        if self.autocast:
            return f"{str(output.dtype).removeprefix('torch.')} (autocast)"
        if self.device == "cpu":
            return None
        return "tf32 (cuDNN convolutions)" if self.torch.backends.cudnn.allow_tf32 else "fp32"

    @staticmethod
    def _hook(module: Any, tap: Tap, captured: dict[str, Any]) -> Any:
        def keep(value: Any) -> None:
            if tap.name in captured:
                raise ParityError(
                    f"tap '{tap.name}': module '{tap.module}' runs more than once per forward "
                    "pass; tap a module that runs once"
                )
            captured[tap.name] = value

        if tap.point == "input":
            return module.register_forward_pre_hook(lambda _m, args: keep(args[0]))
        return module.register_forward_hook(lambda _m, _args, out: keep(out))


def host_copy(value: Any) -> np.ndarray:
    """A float32 host copy of a tensor of any device, dtype or memory format."""
    array: np.ndarray = value.detach().float().cpu().contiguous().numpy().copy()
    return array
