"""OpenVINO runner (CPU plugin): taps by marking intermediate tensors as model outputs.

Runs an ONNX file or OpenVINO IR (``.xml`` + ``.bin``). Taps come from the artifact's
``tap_values`` map (tap name -> tensor name, see :mod:`parity.export.openvino`); each
requested tensor is added as an output with ``Model.add_outputs``, one compiled model
per tap set. ``precision`` is OpenVINO's ``INFERENCE_PRECISION_HINT``. The CPU plugin
ignores a hint the processor cannot execute (bf16 without AVX512-BF16/AMX, f16 without
AVX512-FP16/AMX-FP16) and runs f32: :func:`precision_unavailable` reports such a variant
as not applicable, and the runner checks the effective precision of every compiled
model, so a reduced-precision variant never passes while running f32.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity import lazy
from parity.backends.base import OUTPUT, Runner
from parity.errors import ArtifactError, RuntimeFailure, TapError, runtime_failure
from parity.fixtures import file_sha256
from parity.taps import Tap

#: Inference precision hint -> the CPU capability that executes it.
PRECISIONS = {"f32": "FP32", "bf16": "BF16", "f16": "FP16"}


def precision_unavailable(options: Mapping[str, Any]) -> str | None:
    """Why OpenVINO's CPU plugin cannot run ``options["precision"]`` here, or ``None``."""
    precision = options.get("precision", "f32")
    ov = lazy.require("openvino")
    capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if PRECISIONS[precision] not in capabilities:
        return (
            f"this CPU has no {precision} execution in OpenVINO {ov.__version__.split('-')[0]} "
            f"(OPTIMIZATION_CAPABILITIES: {', '.join(capabilities)}): the hint "
            f"INFERENCE_PRECISION_HINT={precision} would silently run f32"
        )
    return None


class OpenVINORunner(Runner):
    """Runs an ONNX or OpenVINO IR file on OpenVINO's CPU plugin.

    Args:
        name: variant name.
        path: ``model.onnx`` or ``model.xml`` (with ``model.bin`` beside it).
        threads: ``INFERENCE_NUM_THREADS``.
        tap_values: tap name -> tensor name in the model.
        precision: ``"f32"``, ``"bf16"`` or ``"f16"`` (``INFERENCE_PRECISION_HINT``).
        bin_sha256: expected sha256 of the IR's ``.bin`` (checked before loading).
    """

    input_layout = "NCHW"
    tap_layout = "NCHW"

    def __init__(
        self,
        name: str,
        path: Path,
        threads: int = 2,
        tap_values: Mapping[str, str] | None = None,
        precision: str = "f32",
        bin_sha256: str | None = None,
    ) -> None:
        super().__init__(name)
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.path = Path(path)
        self.threads = threads
        self.tap_values = dict(tap_values or {})
        self.precision = precision
        self.bin_sha256 = bin_sha256
        self._compiled: dict[tuple[str, ...], Any] = {}

    def _activate(self) -> None:
        self.ov = lazy.require("openvino")
        self.core = self.ov.Core()
        if not self.path.is_file():
            raise ArtifactError(f"{self.path}: model file not found")
        weights = self.path.with_suffix(".bin")
        if self.bin_sha256 is not None and (
            not weights.is_file() or file_sha256(weights) != self.bin_sha256
        ):
            raise ArtifactError(
                f"{weights}: OpenVINO IR weights missing or modified (sha256 differs from the "
                "artifact's metadata); rebuild the artifact (--rebuild)"
            )
        self._compiled.clear()

    def _deactivate(self) -> None:
        self._compiled.clear()

    def _compile(self, taps: Sequence[Tap]) -> Any:
        key = tuple(t.name for t in taps)
        if key in self._compiled:
            return self._compiled[key]
        try:
            model = self.core.read_model(str(self.path))
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else "RuntimeError"
            raise ArtifactError(f"{self.path}: OpenVINO cannot read it ({first})") from None
        names = {name for port in model.get_ops() for o in port.outputs() for name in o.names}
        for tap in taps:
            value = self.tap_values.get(tap.name)
            if value is None:
                raise TapError(f"{self.name}: no tensor is mapped to tap '{tap.name}'")
            if value not in names:
                raise TapError(f"{self.name}: tap '{tap.name}': no tensor '{value}' in the model")
        if taps:
            model.add_outputs([self.tap_values[t.name] for t in taps])
        config = {
            "INFERENCE_PRECISION_HINT": self.precision,
            "INFERENCE_NUM_THREADS": self.threads,
        }
        with runtime_failure(f"{self.path}: OpenVINO cannot compile it"):
            compiled = self.core.compile_model(model, "CPU", config)
        effective = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if effective != self.precision:
            raise RuntimeFailure(
                f"{self.name}: OpenVINO compiled the model in {effective}, not the requested "
                f"{self.precision}"
            )
        self._compiled[key] = compiled
        return compiled

    def _run(self, feed: np.ndarray, taps: Sequence[Tap]) -> dict[str, np.ndarray]:
        compiled = self._compile(taps)
        with runtime_failure(f"{self.path}: OpenVINO failed running it"):
            values = compiled(feed)
        outputs = compiled.outputs
        result = {OUTPUT: np.asarray(values[outputs[0]], dtype=np.float32)}
        for tap in taps:  # a tap may be the model output itself (add_outputs adds nothing)
            port = next(o for o in outputs if self.tap_values[tap.name] in o.names)
            result[tap.name] = np.asarray(values[port], dtype=np.float32)
        return result
