"""A torch module wrapped to return its taps as outputs, for the exporters that trace it
(ExecuTorch's ``.pte``, the AOTInductor package of ``torch_compile``).

A forward hook on each tap's module (a pre-hook for an ``input`` tap) keeps the tensor,
and the wrapper returns ``(output, *taps)`` in the card's order. A tap that is the model
output (the classifier of an image model) or the same tensor as another tap shares that
output. Each tap is then an output of the exported program: located by construction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from parity import lazy
from parity.errors import TapError
from parity.runner import OUTPUT
from parity.taps import Tap

#: How every tap is located: it is an output of the program (:func:`tapped`).
PROGRAM_OUTPUT = "program output"
EVIDENCE = "a forward hook on its module returned it as an output of the exported program"


def tapped(module: Any, taps: Sequence[Tap]) -> Any:
    """``module`` wrapped to return ``(output, *taps)``; after an eager forward pass,
    ``wrapper.index`` gives each tap's output index. Its hooks are on ``module`` itself:
    ``wrapper.remove()`` takes them off."""
    torch = lazy.torch()
    modules = dict(module.named_modules())
    missing = [t.name for t in taps if t.module not in modules]
    if missing:
        raise TapError(f"taps {missing}: their modules are not in the model")

    class Tapped(torch.nn.Module):  # type: ignore[name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.model = module
            self.captured: dict[str, Any] = {}
            self.index: dict[str, int] = {}
            self.handles = [self._hook(modules[t.module], t) for t in taps]

        def _hook(self, target: Any, tap: Tap) -> Any:
            def keep(value: Any) -> None:
                if tap.name in self.captured:
                    raise TapError(
                        f"tap '{tap.name}': module '{tap.module}' runs more than once per "
                        "forward pass; tap a module that runs once"
                    )
                if not isinstance(value, torch.Tensor):
                    raise TapError(f"tap '{tap.name}': the {tap.describe()} is not one tensor")
                self.captured[tap.name] = value

            if tap.point == "input":
                return target.register_forward_pre_hook(lambda _m, args: keep(args[0]))
            return target.register_forward_hook(lambda _m, _args, out: keep(out))

        def remove(self) -> None:
            for handle in self.handles:
                handle.remove()

        def forward(self, x: Any) -> tuple[Any, ...]:
            self.captured.clear()
            outputs = [self.model(x)]
            for tap in taps:
                value = self.captured[tap.name]
                found = next((i for i, seen in enumerate(outputs) if value is seen), len(outputs))
                if found == len(outputs):
                    outputs.append(value)
                self.index[tap.name] = found
            self.captured.clear()  # no tensor left on the module after a trace
            return tuple(outputs)

    return Tapped()


def output_indices(
    variant: str, program: Path, outputs: Mapping[str, int], taps: Sequence[Tap], made: str
) -> dict[str, int]:
    """``output`` and each requested tap -> its index among ``program``'s outputs (recorded
    by :func:`tapped` when it was ``made``); a tap the program does not return is an error."""
    for tap in taps:
        if tap.name not in outputs:
            raise TapError(
                f"{variant}: tap '{tap.name}' is not an output of {program} ({made} for "
                "another card's taps)"
            )
    return {OUTPUT: outputs[OUTPUT], **{t.name: outputs[t.name] for t in taps}}
