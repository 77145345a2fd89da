"""Reads a TFLite file made elsewhere: tensors (int8 dequantised), ops, one image."""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity import lazy
from parity.backends.litert.internals import ops_details
from parity.detect import Detection, GraphTensor, Probe, TensorInfo, main_path
from parity.errors import ArtifactError, TapError, runtime_failure
from parity.preprocess import Layout
from parity.runner import OUTPUT, Runner
from parity.taps import Tap


class LiteProbe(Probe):
    runtime = "litert"
    native_layout = "NHWC"
    label = "TFLite"
    kind = "TFLite flatbuffers ('TFL3')"

    @classmethod
    def recognise(cls, path: Path, head: bytes, hint: str | None) -> str | None:
        return "TFLite flatbuffer (identifier 'TFL3')" if head[4:8] == b"TFL3" else None

    def load(self) -> None:
        self.module = lazy.require("ai_edge_litert.interpreter")
        self.interpreter = _interpreter(self.module, self.path, self.threads, preserve=True)
        self.details = {d["index"]: d for d in self.interpreter.get_tensor_details()}
        names = Counter(d["name"] for d in self.details.values())
        self.keys = {
            i: (d["name"] if names[d["name"]] == 1 and d["name"] else f"#{i}")
            for i, d in self.details.items()
        }
        self.ops = ops_details(self.interpreter)

    def _info(self, detail: Mapping[str, Any]) -> TensorInfo:
        shape = tuple(None if int(d) < 0 else int(d) for d in detail["shape_signature"])
        scale, zero_point = detail["quantization"]
        quantised = scale != 0
        return TensorInfo(
            self.keys[detail["index"]],
            shape,
            np.dtype(detail["dtype"]).name,
            float(scale) if quantised else None,
            int(zero_point) if quantised else None,
        )

    def inputs(self) -> list[TensorInfo]:
        return [self._info(d) for d in self.interpreter.get_input_details()]

    def outputs(self) -> list[TensorInfo]:
        return [self._info(d) for d in self.interpreter.get_output_details()]

    def summary(self) -> str:
        ops = Counter(op["op_name"] for op in self.ops)
        common = ", ".join(f"{n} {op}" for op, n in ops.most_common(4))
        return f"TFLite, {len(self.ops)} ops ({common}, ...)"

    def module_anchors(
        self, taps: Sequence[Tap], tensors: Sequence[GraphTensor], shapes: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The taps litert-torch's module-path tensor names locate (:mod:`.scopes`)."""
        from parity.backends.litert.scopes import anchors

        entries, _, _ = anchors(self.interpreter, self.keys, tensors, taps, shapes)
        return entries

    def index(self, key: str) -> int:
        for index, known in self.keys.items():
            if known == key:
                return index
        raise TapError(f"{self.path}: no tensor '{key}'")

    def input_adapter(self) -> tuple[str, tuple[int, ...]] | None:
        index = self.interpreter.get_input_details()[0]["index"]
        users = [op for op in self.ops if index in [int(t) for t in op["inputs"]]]
        if len(users) == 1 and users[0]["op_name"] == "TRANSPOSE":
            self.interpreter.allocate_tensors()
            perm = self.interpreter.get_tensor(int(users[0]["inputs"][1]))
            return "TRANSPOSE op", tuple(int(p) for p in perm)
        return None

    def discover(
        self, feed: np.ndarray, output: str
    ) -> tuple[np.ndarray, list[GraphTensor], set[str]]:
        from parity.backends.litert.runner import dequantize, quantize

        interpreter = self.interpreter
        detail = interpreter.get_input_details()[0]
        with runtime_failure(f"{self.path}: LiteRT failed running it"):
            interpreter.resize_tensor_input(detail["index"], list(feed.shape), strict=False)
            interpreter.allocate_tensors()
            detail = interpreter.get_input_details()[0]
            if np.issubdtype(np.dtype(detail["dtype"]), np.integer):
                feed = quantize(feed, detail)
            interpreter.set_tensor(detail["index"], np.ascontiguousarray(feed))
            interpreter.invoke()
        graph_inputs = {int(d["index"]) for d in interpreter.get_input_details()}
        produced = {int(t) for op in self.ops for t in op["outputs"]}
        constant = {i for i in self.details if i not in produced and i not in graph_inputs}
        births: dict[str, int] = {self.keys[i]: -1 for i in graph_inputs}
        deaths: dict[str, int] = {}
        found: dict[str, tuple[int, str]] = {}
        for position, op in enumerate(self.ops):
            inputs = [int(t) for t in op["inputs"] if t >= 0]
            outputs = [int(t) for t in op["outputs"] if t >= 0]
            if inputs and all(t in constant for t in inputs):  # weight preparation
                constant.update(outputs)
                continue
            for t in inputs:
                if self.keys[t] in births:
                    deaths[self.keys[t]] = position
            for t in outputs:
                dtype = np.dtype(self.details[t]["dtype"])
                quantised = bool(len(self.details[t]["quantization_parameters"]["scales"]))
                if np.issubdtype(dtype, np.floating) or quantised:
                    births[self.keys[t]] = position
                    found[self.keys[t]] = (t, op["op_name"])
        deaths[output] = len(self.ops)
        main = main_path(births, deaths, len(self.ops))
        tensors = []
        for key, (index, op_name) in sorted(found.items(), key=lambda kv: births[kv[0]]):
            value = dequantize(interpreter.get_tensor(index), self.details[index])
            tensors.append(
                GraphTensor(key, births[key], op_name, tuple(value.shape), value, key in main)
            )
        out = self.index(output)
        result = dequantize(interpreter.get_tensor(out), self.details[out])
        return result, tensors, set(self.keys.values())

    def runner(self, name: str, tensors: Mapping[str, str], detection: Detection) -> Runner:
        indices = {tap: self.index(key) for tap, key in tensors.items()}
        return _LiteRunner(
            name,
            self.path,
            indices,
            self.index(detection.output.name),
            self.threads,
            detection.layout,
        )


def _interpreter(module: Any, path: Path, threads: int, preserve: bool) -> Any:
    options: dict[str, Any] = {"num_threads": threads}
    if preserve:
        options["experimental_preserve_all_tensors"] = True
    try:
        with warnings.catch_warnings():  # "preserve_all_tensors is for debugging": it is
            warnings.filterwarnings("ignore", ".*experimental_preserve_all_tensors")
            return module.Interpreter(model_path=str(path), **options)
    except (ValueError, RuntimeError) as exc:
        raise ArtifactError(
            f"{path}: LiteRT cannot load it ({type(exc).__name__}: {exc})"
        ) from None


class _LiteRunner(Runner):
    """LiteRT on a file made elsewhere: taps are tensor indices found by the matcher.

    (:class:`~parity.backends.litert.runner.LiteRTRunner` locates taps by the Keras layer names
    parity's own converter leaves in tensor names, which a foreign file does not have.)
    Taps come back in the file's own layout; :class:`ExternalRunner` converts them.
    """

    tap_layout = "NCHW"

    def __init__(
        self,
        name: str,
        path: Path,
        tensors: Mapping[str, int],
        output: int,
        threads: int,
        input_layout: Layout,
    ) -> None:
        super().__init__(name)
        self.path = path
        self.tensors = dict(tensors)
        self.output = output
        self.threads = threads
        self.input_layout = input_layout
        self._interpreters: dict[bool, Any] = {}
        self._shapes: dict[bool, tuple[int, ...]] = {}

    def _activate(self) -> None:
        self._module = lazy.require("ai_edge_litert.interpreter")
        self._interpreters.clear()
        self._shapes.clear()

    def _deactivate(self) -> None:
        self._interpreters.clear()

    def _run(self, feed: np.ndarray, taps: Sequence[Tap]) -> dict[str, np.ndarray]:
        from parity.backends.litert.runner import dequantize, quantize

        preserve = bool(taps)
        if preserve not in self._interpreters:
            self._interpreters[preserve] = _interpreter(
                self._module, self.path, self.threads, preserve
            )
        interpreter = self._interpreters[preserve]
        detail = interpreter.get_input_details()[0]
        with runtime_failure(f"{self.path}: LiteRT failed running it"):
            if self._shapes.get(preserve) != feed.shape:
                interpreter.resize_tensor_input(detail["index"], list(feed.shape), strict=True)
                interpreter.allocate_tensors()
                self._shapes[preserve] = feed.shape
                detail = interpreter.get_input_details()[0]
            if np.issubdtype(np.dtype(detail["dtype"]), np.integer):
                feed = quantize(feed, detail)
            interpreter.set_tensor(detail["index"], np.ascontiguousarray(feed))
            interpreter.invoke()
        details = {d["index"]: d for d in interpreter.get_tensor_details()}
        result = {OUTPUT: dequantize(interpreter.get_tensor(self.output), details[self.output])}
        for tap in taps:
            index = self.tensors[tap.name]
            result[tap.name] = dequantize(interpreter.get_tensor(index), details[index])
        return result
