"""Runs the ``torch_compile`` artifact: an AOTInductor package whose outputs include the taps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity import lazy
from parity.backends.torch.runner import host_copy
from parity.backends.torch.tapped import output_indices
from parity.backends.torch_cpu.compile import vec_isa
from parity.errors import ArtifactError, ParityError, runtime_failure
from parity.runner import OUTPUT, Runner
from parity.taps import Tap


class CompiledRunner(Runner):
    """Loads ``model.pt2`` (:mod:`.compile`) with ``aoti_load_package``; compiles nothing.

    Args:
        name: variant name.
        path: the package.
        outputs: ``output`` and each tap name -> its index among the package's outputs.
        vec_isa: the vector ISA its kernels were compiled for; a package of another ISA
            is refused (the cache key keeps them apart; a bundle could carry one over).
        threads: intra-op CPU threads.
    """

    input_layout = "NCHW"
    tap_layout = "NCHW"

    def __init__(
        self,
        name: str,
        path: Path | str,
        outputs: Mapping[str, int] | None = None,
        vec_isa: str = "",
        threads: int | None = None,
    ) -> None:
        super().__init__(name)
        self.path = Path(path)
        self.outputs = dict(outputs or {OUTPUT: 0})
        self.vec_isa = vec_isa
        self.threads = threads
        self._compiled: Any = None

    def _activate(self) -> None:
        if not self.path.is_file():
            raise ArtifactError(f"{self.path}: AOTInductor package not found")
        self.torch = lazy.torch()
        if self.threads:
            self.torch.set_num_threads(self.threads)
        here = vec_isa()
        if here != self.vec_isa:
            raise ArtifactError(
                f"{self.path}: compiled for the {self.vec_isa or 'unknown'} vector ISA, this "
                f"CPU's is {here}; rerun with --rebuild to compile it here"
            )
        with runtime_failure(f"{self.name}: AOTInductor failed loading {self.path.name}"):
            self._compiled = self.torch._inductor.aoti_load_package(str(self.path))

    def _deactivate(self) -> None:
        self._compiled = None

    def load_weights(self, state_dict: Mapping[str, Any]) -> None:
        """Replace the package's weights (``state_dict`` of the module, torch tensors) for
        the following runs: the compiled kernels on other numbers, without a compile."""
        constants = {f"model.{name}": value for name, value in state_dict.items()}
        known = set(self._compiled.get_constant_fqns())
        loaded = {k: v for k, v in constants.items() if k in known}
        if not loaded:
            raise ParityError(f"{self.name}: no weight of the state_dict is in {self.path}")
        self._compiled.load_constants(loaded, check_full_update=False)

    def _run(self, feed: np.ndarray, taps: Sequence[Tap]) -> dict[str, np.ndarray]:
        wanted = output_indices(self.name, self.path, self.outputs, taps, "compiled")
        torch = self.torch
        with (
            torch.no_grad(),
            runtime_failure(f"{self.name}: the compiled model failed running"),
        ):
            values = self._compiled(torch.from_numpy(feed))
        return {key: host_copy(values[index]) for key, index in wanted.items()}
