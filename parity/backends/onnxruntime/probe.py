"""Reads an ONNX file made elsewhere: inputs, outputs, every value on one image."""

from __future__ import annotations

import tempfile
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity import lazy
from parity.backends.onnxruntime.runner import OnnxRuntimeRunner
from parity.detect import Detection, GraphTensor, Probe, TensorInfo, first_line, main_path
from parity.errors import ArtifactError, runtime_failure
from parity.runner import Runner
from parity.taps import Tap


class OnnxProbe(Probe):
    runtime = "onnxruntime"
    native_layout = "NCHW"
    label = "ONNX"
    kind = "ONNX protobuf"
    weak_magic = True

    @classmethod
    def recognise(cls, path: Path, head: bytes, hint: str | None) -> str | None:
        # ModelProto field 1 (ir_version, varint) serialises first: tag byte 0x08.
        return "ONNX protobuf" if head[:1] == b"\x08" or hint == cls.runtime else None

    def load(self) -> None:
        onnx = lazy.require("onnx")
        lazy.require("onnxruntime")
        try:
            self.model = onnx.load(str(self.path), load_external_data=False)
            external = sorted(
                {
                    entry.value
                    for i in self.model.graph.initializer
                    if i.data_location == onnx.TensorProto.EXTERNAL
                    for entry in i.external_data
                    if entry.key == "location"
                }
            )
            if external:
                onnx.load_external_data_for_model(self.model, str(self.path.parent))
        except Exception as exc:  # DecodeError, OSError on missing external data, ...
            raise ArtifactError(
                f"{self.path}: not a readable ONNX model ({first_line(exc)})"
            ) from None
        if not self.model.graph.node or self.model.ir_version <= 0:
            raise ArtifactError(f"{self.path}: not an ONNX model (no ir_version or no graph)")
        self.initializers = {i.name for i in self.model.graph.initializer}
        self.external = external
        self.run_path = self.path
        if external:  # ONNX Runtime reads external data only next to a file it was given
            self._folder = tempfile.TemporaryDirectory(prefix="parity-external-")
            self.run_path = Path(self._folder.name) / self.path.name
            onnx.save(self.model, str(self.run_path))

    def _info(self, value: Any) -> TensorInfo:
        helper = lazy.require("onnx.helper")
        kind = value.type.tensor_type
        shape = tuple(d.dim_value if d.dim_value > 0 else None for d in kind.shape.dim)
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(kind.elem_type)).name
        return TensorInfo(value.name, shape, dtype)

    def inputs(self) -> list[TensorInfo]:
        graph = self.model.graph
        return [self._info(v) for v in graph.input if v.name not in self.initializers]

    def outputs(self) -> list[TensorInfo]:
        return [self._info(v) for v in self.model.graph.output]

    def summary(self) -> str:
        opset = next(
            (o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), "?"
        )
        producer = f"{self.model.producer_name} {self.model.producer_version}".strip()
        ops = Counter(n.op_type for n in self.model.graph.node)
        common = ", ".join(f"{n} {op}" for op, n in ops.most_common(4))
        text = (
            f"ONNX IR {self.model.ir_version}, opset {opset}, producer '{producer or '?'}', "
            f"{len(self.model.graph.node)} nodes ({common}, ...)"
        )
        if self.external:
            text += f"; weights in external data {', '.join(self.external)}, run inlined"
        return text

    def input_adapter(self) -> tuple[str, tuple[int, ...]] | None:
        name = self.inputs()[0].name
        users = [n for n in self.model.graph.node if name in n.input]
        if len(users) == 1 and users[0].op_type == "Transpose":
            perm = next((tuple(a.ints) for a in users[0].attribute if a.name == "perm"), ())
            return f"Transpose '{users[0].name}'", perm
        return None

    def _constants(self) -> set[str]:
        constants = set(self.initializers)
        for node in self.model.graph.node:
            inputs = [i for i in node.input if i]
            if node.op_type == "Constant" or (inputs and all(i in constants for i in inputs)):
                constants.update(node.output)
        return constants

    def discover(
        self, feed: np.ndarray, output: str
    ) -> tuple[np.ndarray, list[GraphTensor], set[str]]:
        onnx = lazy.require("onnx")
        ort = lazy.require("onnxruntime")
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        graph = model.graph
        constants = self._constants()
        existing = {o.name for o in graph.output}
        values = [v for n in graph.node for v in n.output if v and v not in constants]
        for value in values:
            if value not in existing:
                graph.output.append(onnx.ValueInfoProto(name=value))
                existing.add(value)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.log_severity_level = 3
        info = self.inputs()[0]
        with runtime_failure(f"{self.path}: ONNX Runtime failed running it"):
            session = ort.InferenceSession(
                model.SerializeToString(), options, providers=["CPUExecutionProvider"]
            )
            names = [o.name for o in session.get_outputs()]
            values = session.run(names, {info.name: feed.astype(info.dtype)})
        arrays = dict(zip(names, values, strict=True))
        births: dict[str, int] = {info.name: -1}
        deaths: dict[str, int] = {}
        ops: dict[str, str] = {}
        for index, node in enumerate(graph.node):
            for value in node.input:
                if value in births:
                    deaths[value] = index
            for value in node.output:
                array = arrays.get(value)
                if array is not None and np.issubdtype(array.dtype, np.floating):
                    births[value], ops[value] = index, node.op_type
        deaths[output] = len(graph.node)
        main = main_path(births, deaths, len(graph.node))
        tensors = [
            GraphTensor(
                k,
                births[k],
                ops[k],
                tuple(arrays[k].shape),
                arrays[k].astype(np.float32),
                k in main,
            )
            for k in sorted(ops, key=lambda k: births[k])
        ]
        keys = {v for n in graph.node for v in n.output}
        return arrays[output].astype(np.float32), tensors, keys

    def runner(self, name: str, tensors: Mapping[str, str], detection: Detection) -> Runner:
        runner = _OnnxRunner(
            name,
            self.run_path,
            threads=self.threads,
            input_layout=detection.layout,
            tap_layout="NCHW",
            tap_values=tensors,
            feed_dtype=detection.input.dtype,
        )
        runner.keep = self  # the inlined copy lives as long as the runner
        return runner


class _OnnxRunner(OnnxRuntimeRunner):
    """OnnxRuntimeRunner feeding the input's own dtype (float16 models) and returning fp32."""

    def __init__(self, *args: Any, feed_dtype: str = "float32", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.feed_dtype = np.dtype(feed_dtype)
        self.keep: object = None

    def _run(self, feed: np.ndarray, taps: Sequence[Tap]) -> dict[str, np.ndarray]:
        values = super()._run(feed.astype(self.feed_dtype, copy=False), taps)
        return {key: np.asarray(value, dtype=np.float32) for key, value in values.items()}
