"""OpenVINO runner (CPU plugin): taps by marking intermediate tensors as model outputs.

Runs an ONNX file or OpenVINO IR (``.xml`` + ``.bin``). Taps come from the artifact's
``tap_values`` map (tap name -> tensor name, see :mod:`parity.export.openvino`); each
requested tensor is added as an output with ``Model.add_outputs``, one compiled model
per tap set. ``precision`` is OpenVINO's ``INFERENCE_PRECISION_HINT``.

The CPU plugin ignores a hint the processor cannot execute (bf16 without AVX512-BF16/AMX,
f16 without AVX512-FP16/AMX-FP16, or an ISA capped by ``ONEDNN_MAX_CPU_ISA``) and runs f32.
A bf16/f16 variant must give the same verdict on every CPU, so where the convolutions did
not run in the requested precision (read from the compiled model's runtime info), the
runner emulates it: weights and every op's output are rounded to bf16/f16 by inserted
``Convert`` pairs (f32 kernels accumulate, as the native ones do). :attr:`executed` says
which: ``bf16`` or ``bf16 emulated (...)``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity import lazy
from parity.errors import ArtifactError, TapError, runtime_failure
from parity.fixtures import file_sha256
from parity.runner import OUTPUT, Runner
from parity.taps import Tap

#: Inference precision hints the variants use.
PRECISIONS = ("f32", "bf16", "f16")
#: Ops whose runtime precision says what the model computed in.
_COMPUTE = ("Convolution", "GroupConvolution", "FullyConnected", "MatMul")
#: Ops left unrounded by the emulation (shapes, indices, the rounding itself).
_SKIP = ("Constant", "Result", "Convert", "ShapeOf", "Reshape", "Squeeze", "Unsqueeze")


def runtime_precisions(compiled: Any) -> Counter[str]:
    """How many compute ops of a compiled model ran in each precision (runtime info)."""
    found: Counter[str] = Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if info["layerType"].astype(str) in _COMPUTE:
            found[info["runtimePrecision"].astype(str)] += 1
    return found


def round_to(model: Any, precision: str) -> int:
    """Emulate ``precision`` in ``model``: round float weights (rank >= 2) and every float
    op output to it with ``Convert`` pairs. Returns how many tensors were rounded."""
    ov = lazy.require("openvino")
    opset = lazy.require("openvino.opset13")
    rounded = 0
    for op in list(model.get_ordered_ops()):
        kind = op.get_type_name()
        if kind in _SKIP and not (kind == "Constant" and len(op.get_output_shape(0)) >= 2):
            continue
        for output in op.outputs():
            if output.get_element_type() != ov.Type.f32:
                continue
            consumers = list(output.get_target_inputs())
            low = opset.convert(opset.convert(output, precision), "f32").output(0)
            for consumer in consumers:
                consumer.replace_source_output(low)
            rounded += 1
    model.validate_nodes_and_infer_types()
    return rounded


class OpenVINORunner(Runner):
    """Runs an ONNX or OpenVINO IR file on OpenVINO's CPU plugin.

    Args:
        name: variant name.
        path: ``model.onnx`` or ``model.xml`` (with ``model.bin`` beside it).
        threads: ``INFERENCE_NUM_THREADS``.
        tap_values: tap name -> tensor name in the model.
        precision: ``"f32"``, ``"bf16"`` or ``"f16"`` (``INFERENCE_PRECISION_HINT``;
            emulated where the CPU does not execute it).
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
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
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
        compiled = self._compile_model(model, self.precision)
        ran = runtime_precisions(compiled)
        if self.precision != "f32" and self.precision not in ran:
            native = ", ".join(f"{n} {p}" for p, n in sorted(ran.items()))
            rounded = round_to(model, self.precision)
            compiled = self._compile_model(model, "f32")
            self.executed = (
                f"{self.precision} emulated (the hint ran its compute ops as {native} on this "
                f"CPU; f32 kernels with {rounded} tensors rounded to {self.precision})"
            )
        else:
            others = sum(n for p, n in ran.items() if p != self.precision)
            self.executed = self.precision + (f" ({others} compute ops in f32)" if others else "")
        self._compiled[key] = compiled
        return compiled

    def _compile_model(self, model: Any, hint: str) -> Any:
        config = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": self.threads}
        with runtime_failure(f"{self.path}: OpenVINO cannot compile it"):
            return self.core.compile_model(model, "CPU", config)

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
