"""The torch eager reference runner: taps by forward hooks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from parity import lazy
from parity.backends.base import OUTPUT, Runner
from parity.errors import ParityError, TapError
from parity.taps import Tap


class TorchRunner(Runner):
    """Runs a ``torch.nn.Module`` on the CPU; refuses one in training mode."""

    input_layout = "NCHW"
    tap_layout = "NCHW"

    def __init__(self, name: str, module: Any, threads: int | None = None) -> None:
        super().__init__(name)
        self.module = module
        self.threads = threads

    def _activate(self) -> None:
        self.torch = lazy.torch()
        if self.threads:
            self.torch.set_num_threads(self.threads)

    def _check_eval(self) -> None:
        training = [name or "<root>" for name, m in self.module.named_modules() if m.training]
        if training:
            raise ParityError(
                f"{self.name}: model is in training mode ({len(training)} modules, e.g. "
                f"{training[:3]}): BatchNorm would use batch statistics and Dropout would "
                "drop; call model.eval() first"
            )

    def _run(self, feed: np.ndarray, taps: Sequence[Tap]) -> dict[str, np.ndarray]:
        self._check_eval()
        modules = dict(self.module.named_modules())
        captured: dict[str, np.ndarray] = {}
        handles = []
        for tap in taps:
            if tap.module not in modules:
                raise TapError(
                    f"{self.name}: tap '{tap.name}': no module '{tap.module}' in the model"
                )
            handles.append(self._hook(modules[tap.module], tap, captured))
        try:
            with self.torch.no_grad():
                output = self.module(self.torch.from_numpy(feed))
        finally:
            for handle in handles:
                handle.remove()
        captured[OUTPUT] = output.numpy()
        return captured

    @staticmethod
    def _hook(module: Any, tap: Tap, captured: dict[str, np.ndarray]) -> Any:
        def keep(value: Any) -> None:
            if tap.name in captured:
                raise ParityError(
                    f"tap '{tap.name}': module '{tap.module}' runs more than once per forward "
                    "pass; tap a module that runs once"
                )
            captured[tap.name] = value.detach().numpy().copy()

        if tap.point == "input":
            return module.register_forward_pre_hook(lambda _m, args: keep(args[0]))
        return module.register_forward_hook(lambda _m, _args, out: keep(out))
