"""ExecuTorch's Python runtime on a ``.pte`` program whose outputs include the card's taps."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity import lazy
from parity.backends.torch.tapped import output_indices
from parity.errors import ArtifactError, runtime_failure
from parity.runner import OUTPUT, Runner
from parity.taps import Tap


class ExecuTorchRunner(Runner):
    """Runs a ``.pte`` with ``executorch.runtime``, one image per ``execute`` (batch 1).

    Args:
        name: variant name.
        path: the ``.pte`` file.
        outputs: ``output`` and each tap name -> its index among the program's outputs
            (recorded by :mod:`.convert`).
        threads: the runtime's thread pool (XNNPACK's threads; portable kernels use one).
    """

    input_layout = "NCHW"
    tap_layout = "NCHW"

    def __init__(
        self,
        name: str,
        path: Path | str,
        outputs: Mapping[str, int] | None = None,
        threads: int = 2,
    ) -> None:
        super().__init__(name)
        self.path = Path(path)
        self.outputs = dict(outputs or {OUTPUT: 0})
        self.threads = threads
        self._method: Any = None

    def _activate(self) -> None:
        if not self.path.is_file():
            raise ArtifactError(f"{self.path}: ExecuTorch program not found")
        self.torch = lazy.torch()
        runtime = lazy.require("executorch.runtime")
        lib = lazy.require("executorch.extension.pybindings.portable_lib")
        reset = getattr(lib, "_unsafe_reset_threadpool", None)
        if reset is not None:  # the pybindings' own pool, sized to the cores by default
            reset(self.threads)
        with runtime_failure(f"{self.name}: ExecuTorch failed loading {self.path.name}"):
            program = runtime.Runtime.get().load_program(self.path)
            self._method = program.load_method("forward")

    def _deactivate(self) -> None:
        self._method = None

    def _run(self, feed: np.ndarray, taps: Sequence[Tap]) -> dict[str, np.ndarray]:
        wanted = output_indices(self.name, self.path, self.outputs, taps, "exported")
        images: dict[str, list[np.ndarray]] = {key: [] for key in wanted}
        for i in range(len(feed)):
            image = self.torch.from_numpy(np.ascontiguousarray(feed[i : i + 1]))
            with runtime_failure(f"{self.name}: ExecuTorch failed running {self.path.name}"):
                values = self._method.execute([image])
            for key, index in wanted.items():
                images[key].append(values[index].detach().float().numpy().copy())
        return {key: np.concatenate(arrays) for key, arrays in images.items()}
