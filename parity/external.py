"""Check an artifact made elsewhere: an ONNX, TFLite or Keras file parity did not export.

``parity run --artifact model.onnx`` (or :func:`check_artifact` in a test) runs the
card's fixtures through a file someone else produced and judges it against the torch
reference with the same budgets, the same :func:`~parity.compare.compare_taps` and the
same "first divergent tap" explanation as the built-in variants. parity knows nothing
about how the file was made, so it reads what it can from the file itself and says what
it read (``detected: ...`` lines, shown in the console and stored in the JSON report):

* **runtime**, from the magic bytes (TFLite's ``TFL3`` identifier at byte 4, the zip
  header of a ``.keras`` file, the protobuf tag of ``ModelProto.ir_version`` at byte 0),
  cross-checked with the suffix and ``--artifact-runtime``;
* **input**: its name, dtype, quantisation (TFLite int8: scale and zero point, used to
  quantise the float batch), batch dimension (dynamic: one run; fixed: runs of that
  size) and **layout**: the axis holding the card's 3 channels, with the card's
  height x width on the other two. A layout adapter right after the input (a Transpose
  or Keras Permute added by a converter) is reported and checked against the layout the
  runtime's ops use. When axis 1 and axis 3 cannot be told apart (a 3x3 input with 3
  channels, or both dynamic), parity refuses to guess and asks for ``--input-layout``;
* **output**: the one output of shape (batch, num_classes); its values are the logits,
  always compared (top-1 agreement, top-5 overlap).

Intermediate taps are compared only where they can be located honestly:

1. **explicit**: a tap map file (TOML or JSON, ``tap = "tensor"`` or
   ``tap = {tensor = "...", layout = "NHWC"}``, optionally under a ``[taps]`` table);
2. **automatically, by shape and graph order** (the tap map's entries are anchors).
   One run of the file on the first image exposes every tensor (ONNX: all values added
   as graph outputs; TFLite: ``experimental_preserve_all_tensors``, int8 dequantised;
   Keras: every layer output). Candidates for a tap are the tensors on the main path (a
   tensor that is the only live activation at its point of the graph, as every module
   output of a chain is; tensors inside a residual branch are not) whose shape equals
   the reference tap's in NCHW or NHWC. Taps and candidates must appear in the same
   order, so for each tap parity computes the earliest and the latest candidate any
   in-order assignment could give it; when both are the same tensor the tap is matched
   (``shape-unique`` if it is the only tensor of that shape after the previous match,
   ``shape-order`` if the taps that follow need the other ones). Values play no part.
3. Where several candidates remain, their values on the first image are compared with
   the reference **as evidence only**: the tap is matched (``numeric``) when exactly one
   candidate is within the tap's ``max_abs_norm`` budget and every other one is more
   than :data:`CLEAR_MARGIN` times over it; otherwise it is reported as unmatched,
   with the numbers. A value-based pairing cannot pair a tap that diverges, so it is
   used last, and the verdict never depends on a tap it could not place.

Unmatched taps are listed with their reason and left out of the verdict; the report says
how many taps were compared and how each was located.
"""

from __future__ import annotations

import abc
import dataclasses
import tempfile
import time
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from parity import lazy
from parity.artifacts import Artifact
from parity.compare import compare_taps
from parity.errors import ArtifactError, ParityError, TapError
from parity.fixtures import file_sha256
from parity.preprocess import Layout, to_layout
from parity.runtimes.base import OUTPUT, Runner
from parity.runtimes.onnxruntime import OnnxRuntimeRunner
from parity.schema import Field, check, read_config, string, table
from parity.taps import Tap
from parity.variants import Variant

if TYPE_CHECKING:
    from parity.harness import Session
    from parity.result import VariantResult

#: Runtime families that can run a file made elsewhere, and the module each needs.
RUNTIMES: dict[str, str] = {
    "onnxruntime": "onnxruntime",
    "litert": "ai_edge_litert",
    "keras": "tensorflow",
}
SUFFIXES = {".onnx": "onnxruntime", ".tflite": "litert", ".keras": "keras", ".h5": "keras"}
LAYOUTS: tuple[Layout, ...] = ("NCHW", "NHWC")
#: The layout the ops of each runtime compute in (ONNX Conv is NCHW, TFLite/Keras NHWC).
NATIVE_LAYOUT: dict[str, Layout] = {"onnxruntime": "NCHW", "litert": "NHWC", "keras": "NHWC"}
#: Numeric tie-break: the other candidates must be this many times over the budget.
CLEAR_MARGIN = 10.0
#: Name of the pseudo-tap that fetches the chosen output when it is not the runner's own.
_OUTPUT_TAP = "__output__"

Shape = tuple[int | None, ...]


# -- what the file says about itself ---------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One input or output as the file declares it (``None``: a dynamic dimension)."""

    name: str
    shape: Shape
    dtype: str
    scale: float | None = None
    zero_point: int | None = None

    def describe(self) -> str:
        text = f"'{self.name}' {self.dtype} {format_shape(self.shape)}"
        if self.scale is not None:
            text += f", scale {self.scale:.6g}, zero point {self.zero_point}"
        return text


@dataclasses.dataclass(eq=False)
class GraphTensor:
    """An intermediate tensor seen in the discovery run (one image)."""

    key: str
    position: int
    op: str
    shape: tuple[int, ...]
    value: np.ndarray
    main_path: bool


@dataclasses.dataclass(frozen=True)
class Detection:
    """What was read from the file: runtime, input, output, layout, batch."""

    path: Path
    runtime: str
    format: str
    input: TensorInfo
    output: TensorInfo
    layout: Layout
    #: Images per run: ``None`` for a dynamic batch dimension.
    batch: int | None
    lines: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TapMatch:
    """How one tap was located in the artifact (``tensor`` is None when unmatched)."""

    tap: str
    how: str
    tensor: str | None
    layout: Layout | None
    evidence: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class TapMapEntry:
    tensor: str
    layout: Layout | None = None


def format_shape(shape: Sequence[int | None]) -> str:
    return "(" + ",".join("batch" if d is None else str(d) for d in shape) + ")"


def _short(key: str, limit: int = 60) -> str:
    return key if len(key) <= limit else key[: limit - 3] + "..."


# -- runtime from the bytes ------------------------------------------------------------


def sniff_runtime(path: Path, declared: str | None = None) -> tuple[str, str]:
    """(runtime, what the bytes are) for ``path``; a one-line error for anything else."""
    if declared is not None and declared not in RUNTIMES:
        raise ParityError(f"unknown --artifact-runtime {declared!r}; known: {', '.join(RUNTIMES)}")
    if not path.is_file():
        raise ArtifactError(f"{path}: artifact file not found")
    with path.open("rb") as handle:
        head = handle.read(16)
    by_suffix = SUFFIXES.get(path.suffix.lower())
    found: tuple[str, str] | None = None
    if len(head) >= 8 and head[4:8] == b"TFL3":
        found = ("litert", "TFLite flatbuffer (identifier 'TFL3')")
    elif head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except zipfile.BadZipFile as exc:
            raise ArtifactError(f"{path}: a damaged zip archive ({exc})") from None
        if "config.json" not in names:
            raise ParityError(
                f"{path}: a zip archive without config.json, not a Keras 3 .keras file"
            )
        found = ("keras", "Keras 3 archive (zip with config.json)")
    elif head.startswith(b"\x89HDF"):
        found = ("keras", "Keras HDF5 file")
    elif head[:1] == b"\x08" or "onnxruntime" in (by_suffix, declared):
        # ModelProto field 1 (ir_version, varint) serialises first: tag byte 0x08.
        found = ("onnxruntime", "ONNX protobuf")
    if found is None:
        raise ParityError(
            f"{path}: not an ONNX, TFLite or Keras model (starts with {head[:12]!r}); parity "
            "reads ONNX protobuf, TFLite flatbuffers ('TFL3') and .keras archives"
        )
    runtime, what = found
    if declared is not None and declared != runtime:
        raise ParityError(f"{path}: --artifact-runtime {declared}, but the file is a {what}")
    if by_suffix is not None and by_suffix != runtime:
        raise ParityError(f"{path}: named {path.suffix} but the file is a {what}")
    return runtime, what


# -- one probe per runtime: inputs, outputs, graph, discovery run, runner -------------


class Probe(abc.ABC):
    """Reads one kind of file: its inputs and outputs, and every tensor on one image."""

    runtime: str

    def __init__(self, path: Path, threads: int) -> None:
        self.path = path
        self.threads = threads

    @abc.abstractmethod
    def load(self) -> None:
        """Open the file (ArtifactError when the runtime cannot)."""

    @abc.abstractmethod
    def inputs(self) -> list[TensorInfo]: ...

    @abc.abstractmethod
    def outputs(self) -> list[TensorInfo]: ...

    @abc.abstractmethod
    def summary(self) -> str:
        """One line about the file (format version, op counts)."""

    @abc.abstractmethod
    def input_adapter(self) -> tuple[str, tuple[int, ...]] | None:
        """(op, perm) of a layout transpose right after the input, if there is one."""

    @abc.abstractmethod
    def discover(
        self, feed: np.ndarray, output: str
    ) -> tuple[np.ndarray, list[GraphTensor], set[str]]:
        """Run one image (in the input layout, float32); return the output as float32,
        every data tensor in graph order, and every tensor key in the file."""

    @abc.abstractmethod
    def runner(self, name: str, tensors: Mapping[str, str], detection: Detection) -> Runner:
        """A runner fetching ``tensors`` (tap name -> key) whose taps come back as is."""


def _main_path(births: Mapping[str, int], deaths: Mapping[str, int], count: int) -> set[str]:
    """Keys that are the only live data tensor right after the op producing them."""
    live = np.zeros(count + 1, dtype=np.int64)
    for key, birth in births.items():
        death = deaths.get(key, birth)
        if death > birth:
            live[max(birth, 0) : min(death, count)] += 1
    return {k for k, b in births.items() if b >= 0 and deaths.get(k, b) > b and live[b] == 1}


class OnnxProbe(Probe):
    runtime = "onnxruntime"

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
                f"{self.path}: not a readable ONNX model ({_first_line(exc)})"
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
        session = ort.InferenceSession(
            model.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        info = self.inputs()[0]
        names = [o.name for o in session.get_outputs()]
        arrays = dict(
            zip(names, session.run(names, {info.name: feed.astype(info.dtype)}), strict=True)
        )
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
        main = _main_path(births, deaths, len(graph.node))
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


class LiteProbe(Probe):
    runtime = "litert"

    def load(self) -> None:
        self.module = lazy.require("ai_edge_litert.interpreter")
        self.interpreter = _interpreter(self.module, self.path, self.threads, preserve=True)
        self.details = {d["index"]: d for d in self.interpreter.get_tensor_details()}
        names = Counter(d["name"] for d in self.details.values())
        self.keys = {
            i: (d["name"] if names[d["name"]] == 1 and d["name"] else f"#{i}")
            for i, d in self.details.items()
        }
        self.ops = self.interpreter._get_ops_details()

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
        from parity.runtimes.litert import dequantize, quantize

        interpreter = self.interpreter
        detail = interpreter.get_input_details()[0]
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
        main = _main_path(births, deaths, len(self.ops))
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

    (:class:`~parity.runtimes.litert.LiteRTRunner` locates taps by the Keras layer names
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
        from parity.runtimes.litert import dequantize, quantize

        preserve = bool(taps)
        if preserve not in self._interpreters:
            self._interpreters[preserve] = _interpreter(
                self._module, self.path, self.threads, preserve
            )
        interpreter = self._interpreters[preserve]
        detail = interpreter.get_input_details()[0]
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


class KerasProbe(Probe):
    runtime = "keras"

    def load(self) -> None:
        lazy.tensorflow()
        self.keras = lazy.require("keras")
        try:
            self.model = self.keras.models.load_model(self.path, compile=False)
        except Exception as exc:  # Keras raises ValueError, OSError, zipfile errors, ...
            raise ArtifactError(
                f"{self.path}: Keras cannot load it ({type(exc).__name__}: {exc})"
            ) from None
        if len(self.model.outputs) != 1:
            raise ParityError(
                f"{self.path}: the Keras model has {len(self.model.outputs)} outputs; parity "
                "checks single-output classifiers"
            )
        self.layers = [layer for layer in self.model.layers if type(layer).__name__ != "InputLayer"]

    def _info(self, tensor: Any, name: str) -> TensorInfo:
        return TensorInfo(name, tuple(tensor.shape), np.dtype(str(tensor.dtype)).name)

    def inputs(self) -> list[TensorInfo]:
        return [self._info(t, t._keras_history.operation.name) for t in self.model.inputs]

    def outputs(self) -> list[TensorInfo]:
        return [self._info(t, t._keras_history.operation.name) for t in self.model.outputs]

    def summary(self) -> str:
        kinds = Counter(type(layer).__name__ for layer in self.layers)
        common = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common(4))
        return f"Keras {type(self.model).__name__} '{self.model.name}', {len(self.layers)} layers ({common}, ...)"  # noqa: E501

    def _producers(self, layer: Any) -> list[str]:
        if not layer._inbound_nodes:
            return []
        return [t._keras_history.operation.name for t in layer._inbound_nodes[0].input_tensors]

    def input_adapter(self) -> tuple[str, tuple[int, ...]] | None:
        name = self.inputs()[0].name
        users = [layer for layer in self.layers if name in self._producers(layer)]
        if len(users) == 1 and type(users[0]).__name__ == "Permute":
            return f"Permute layer '{users[0].name}'", (0, *(int(d) for d in users[0].dims))
        return None

    def discover(
        self, feed: np.ndarray, output: str
    ) -> tuple[np.ndarray, list[GraphTensor], set[str]]:
        exposed = []
        for layer in self.layers:
            try:
                tensor = layer.output
            except (AttributeError, ValueError):  # shared layers: several outputs
                continue
            if not isinstance(tensor, list | tuple):
                exposed.append((layer.name, tensor))
        probe = self.keras.Model(self.model.inputs, [t for _, t in exposed])
        values = probe([feed], training=False)
        arrays = {name: np.asarray(v) for (name, _), v in zip(exposed, values, strict=True)}
        births: dict[str, int] = {self.inputs()[0].name: -1}
        deaths: dict[str, int] = {}
        for position, layer in enumerate(self.layers):
            for producer in self._producers(layer):
                if producer in births:
                    deaths[producer] = position
            array = arrays.get(layer.name)
            if array is not None and np.issubdtype(array.dtype, np.floating):
                births[layer.name] = position
        deaths[output] = len(self.layers)
        main = _main_path(births, deaths, len(self.layers))
        tensors = [
            GraphTensor(
                layer.name,
                births[layer.name],
                type(layer).__name__,
                tuple(arrays[layer.name].shape),
                arrays[layer.name].astype(np.float32),
                layer.name in main,
            )
            for layer in self.layers
            if layer.name in births
        ]
        return arrays[output].astype(np.float32), tensors, {layer.name for layer in self.layers}

    def runner(self, name: str, tensors: Mapping[str, str], detection: Detection) -> Runner:
        from parity.runtimes.keras import KerasRunner

        runner: Runner = KerasRunner(name, self.model, tap_layers=tensors, threads=self.threads)
        runner.input_layout = detection.layout
        runner.tap_layout = "NCHW"  # taps come back as the file has them; converted per tap
        return runner


PROBES: dict[str, Callable[[Path, int], Probe]] = {
    "onnxruntime": OnnxProbe,
    "litert": LiteProbe,
    "keras": KerasProbe,
}


# -- detection -------------------------------------------------------------------------


def _fits(shape: Shape, layout: Layout, chw: tuple[int, int, int]) -> bool:
    c, h, w = chw
    expected = (c, h, w) if layout == "NCHW" else (h, w, c)
    return all(d is None or d == e for d, e in zip(shape[1:], expected, strict=True))


def detect_layout(
    path: Path,
    info: TensorInfo,
    chw: tuple[int, int, int],
    card: str,
    given: str | None,
    adapter: str,
) -> tuple[Layout, str]:
    """The input's layout and why; a one-line error when it cannot be told or fits nothing."""
    shape = info.shape
    c, h, w = chw
    if len(shape) != 4:
        raise ParityError(
            f"{path}: input '{info.name}' has shape {format_shape(shape)}; parity feeds 4-D "
            "image batches (NCHW or NHWC)"
        )
    if given is not None:
        if given not in LAYOUTS:
            raise ParityError(f"unknown --input-layout {given!r}; use NCHW or NHWC")
        layout = cast(Layout, given)
        if not _fits(shape, layout, chw):
            _size_error(path, info, chw, card, layout)
        return layout, f"{layout} (given by --input-layout)"
    if shape[1] == shape[3]:
        what = "dynamic" if shape[1] is None else f"of size {shape[1]}"
        raise ParityError(
            f"{path}: input '{info.name}' {format_shape(shape)}: axes 1 and 3 are both {what}, "
            f"so the channel axis cannot be told from the file{adapter}; refusing to guess: "
            "pass --input-layout NCHW or NHWC"
        )
    fitting = [layout for layout in LAYOUTS if _fits(shape, layout, chw)]
    if len(fitting) == 2:
        raise ParityError(
            f"{path}: input '{info.name}' {format_shape(shape)} fits both NCHW and NHWC for "
            f"{c}x{h}x{w}{adapter}; refusing to guess: pass --input-layout NCHW or NHWC"
        )
    if not fitting:
        _size_error(path, info, chw, card, None)
    layout = fitting[0]
    axis = 1 if layout == "NCHW" else 3
    spatial = shape[2:] if layout == "NCHW" else shape[1:3]
    size = f"{h}x{w} on the others" if None not in spatial else f"spatial axes dynamic, fed {h}x{w}"
    return layout, f"{layout} ({c} channels on axis {axis}, {size})"


def _size_error(
    path: Path, info: TensorInfo, chw: tuple[int, int, int], card: str, layout: Layout | None
) -> None:
    c, h, w = chw
    shape = info.shape
    if layout is None:
        layout = "NCHW" if shape[1] == c else "NHWC" if shape[3] == c else None
    if layout is None:
        raise ParityError(
            f"{path}: input '{info.name}' {format_shape(shape)} has no axis of {c} channels; "
            f"model card '{card}' feeds {c}x{h}x{w} images"
        )
    dims = shape[2:] if layout == "NCHW" else shape[1:3]
    size = "x".join("?" if d is None else str(d) for d in dims)
    raise ParityError(
        f"{path}: input '{info.name}' {format_shape(shape)} takes {size} images ({layout}), "
        f"but model card '{card}' preprocesses to {h}x{w}; export the model at {h}x{w} or "
        "check it with a card of its input size"
    )


def detect(probe: Probe, card: Any, what: str, input_layout: str | None = None) -> Detection:
    """Everything parity needs to feed the file and read its logits, from the file."""
    path = probe.path
    lines = [f"detected: runtime {probe.runtime}: {what} ({probe.summary()})"]
    inputs = probe.inputs()
    if len(inputs) != 1:
        names = ", ".join(f"'{i.name}'" for i in inputs)
        raise ParityError(f"{path}: {len(inputs)} inputs ({names}); parity feeds one image batch")
    info = inputs[0]
    adapter = probe.input_adapter()
    hint = ""
    if adapter is not None:
        hint = f" (a {adapter[0]} with perm {adapter[1]} follows it)"
    chw = (card.input_shape[1], *card.preprocess.input_hw)
    layout, why = detect_layout(path, info, chw, card.name, input_layout, hint)
    lines.append(f"detected: input {info.describe()}, layout {why}")
    if adapter is not None:
        op, perm = adapter
        native = NATIVE_LAYOUT[probe.runtime]
        inside = "".join(layout[p] for p in perm) if sorted(perm) == [0, 1, 2, 3] else "?"
        verdict = (
            f"the layout {probe.runtime} ops compute in: a converter's layout adapter"
            if inside == native
            else f"but {probe.runtime} ops compute in {native}: check --input-layout"
        )
        lines.append(
            f"detected: {op} right after the input, perm {perm}: {layout} -> {inside} inside "
            f"the graph ({verdict})"
        )
    dtype = np.dtype(info.dtype)
    if np.issubdtype(dtype, np.integer):
        if info.scale is None:
            raise ParityError(
                f"{path}: input '{info.name}' is {info.dtype} without quantisation parameters "
                "(raw pixels?); parity feeds the card's preprocessed float input"
            )
        lines.append(
            f"detected: {info.dtype} input: the float batch is quantised with scale "
            f"{info.scale:.6g} and zero point {info.zero_point}"
        )
    elif dtype.name not in ("float32", "float16", "float64"):
        raise ParityError(f"{path}: input '{info.name}' has dtype {info.dtype}; expected float")
    elif dtype.name != "float32":
        lines.append(f"detected: {info.dtype} input: the float32 batch is cast to it")
    output, output_line = _pick_output(path, probe.outputs(), card)
    lines.append(output_line)
    batch = info.shape[0]
    if batch is None:
        lines.append("detected: batch dimension dynamic: all images in one run")
    elif batch == 1:
        lines.append("detected: batch dimension fixed at 1: images run one at a time")
    else:
        lines.append(
            f"detected: batch dimension fixed at {batch}: images run {batch} at a time "
            "(the last run padded with zeros, padding dropped)"
        )
    return Detection(path, probe.runtime, what, info, output, layout, batch, tuple(lines))


def _pick_output(path: Path, outputs: Sequence[TensorInfo], card: Any) -> tuple[TensorInfo, str]:
    classes = card.num_classes

    def logits_like(o: TensorInfo) -> bool:
        return len(o.shape) == 2 and o.shape[1] in (classes, None)

    chosen = [o for o in outputs if logits_like(o)]
    if len(outputs) == 1 and not chosen:
        only = outputs[0]
        per_image = only.shape[1] if len(only.shape) == 2 else None
        what = f"{per_image} values per image" if per_image else f"shape {format_shape(only.shape)}"
        raise ParityError(
            f"{path}: output '{only.name}' gives {what}, but model card '{card.name}' has "
            f"{classes} classes (logits of shape (batch, {classes})); is it the same model?"
        )
    if len(chosen) != 1:
        shapes = ", ".join(f"'{o.name}' {format_shape(o.shape)}" for o in outputs)
        raise ParityError(
            f"{path}: {len(chosen)} of its outputs look like (batch, {classes}) logits "
            f"({shapes}); expected exactly one"
        )
    output = chosen[0]
    line = f"detected: output {output.describe()}: the logits ({classes} classes)"
    if len(outputs) > 1:
        line += f", the only one of {len(outputs)} outputs with that shape"
    return output, line


# -- tap map file ----------------------------------------------------------------------


_TAP_MAP_ENTRY = Field(
    either=(
        string(),
        table({"tensor": string(required=True), "layout": string(choices=LAYOUTS)}),
    )
)


def load_tap_map(path: Path, taps: Sequence[Tap]) -> dict[str, TapMapEntry]:
    """Read a tap map: TOML or JSON, ``tap = "tensor"`` or ``tap = {tensor, layout}``."""
    path = Path(path)
    data = read_config(path, "tap map")
    nested = "taps" in data
    entries_field = table({t.name: _TAP_MAP_ENTRY for t in taps})
    check(data["taps"] if nested else data, entries_field, path, "taps" if nested else "")
    if nested and len(data) > 1:
        raise ParityError(f"{path}: unknown table next to [taps]: {sorted(set(data) - {'taps'})}")
    entries = {}
    for tap, value in (data["taps"] if nested else data).items():
        if isinstance(value, str):
            entries[tap] = TapMapEntry(value)
        else:
            entries[tap] = TapMapEntry(value["tensor"], value.get("layout"))
    return entries


# -- matching --------------------------------------------------------------------------


def _tap_layout(reference: tuple[int, ...], tensor: tuple[int, ...]) -> list[Layout] | None:
    """Layouts in which ``tensor`` (batch 1) has the reference tap's per-image shape."""
    if not tensor or tensor[0] != 1:
        return None
    per_image = tensor[1:]
    if len(reference) != 3:
        return ["NCHW"] if per_image == reference else None
    c, h, w = reference
    fits: list[Layout] = []
    if per_image == (c, h, w):
        fits.append("NCHW")
    if per_image == (h, w, c):
        fits.append("NHWC")
    return fits or None


def _where(tensor: GraphTensor, layout: Layout | None) -> str:
    return f"'{_short(tensor.key)}' ({tensor.op}{', ' + layout if layout else ''})"


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def match_taps(
    taps: Sequence[Tap],
    reference: Mapping[str, np.ndarray],
    tensors: Sequence[GraphTensor],
    keys: set[str],
    explicit: Mapping[str, TapMapEntry],
    budget: Callable[[str], float | None],
    native: Layout,
    output: str,
    image: str,
) -> list[TapMatch]:
    """Locate every tap in the artifact, or say why it cannot be (see the module doc)."""
    by_key = {t.key: t for t in tensors}
    shapes = {t.name: tuple(reference[t.name].shape[1:]) for t in taps}
    decided: dict[str, TapMatch] = {}
    anchors: dict[str, GraphTensor] = {}
    layouts: dict[str, dict[str, list[Layout]]] = {}
    for tap in taps:
        if tap.is_logits:
            if tap.name in explicit and explicit[tap.name].tensor != output:
                raise TapError(
                    f"tap map: tap '{tap.name}' is the logits, always read from the output "
                    f"'{output}'; it cannot be mapped to '{explicit[tap.name].tensor}'"
                )
            decided[tap.name] = TapMatch(
                tap.name, "final output", output, None, f"the model output '{_short(output)}'"
            )
            continue
        layouts[tap.name] = {}
        for t in tensors:
            fits = _tap_layout(shapes[tap.name], t.shape)
            if fits:
                layouts[tap.name][t.key] = fits
        if tap.name in explicit:
            decided[tap.name] = _explicit(tap, explicit[tap.name], by_key, keys, shapes[tap.name])
            anchors[tap.name] = by_key[explicit[tap.name].tensor]

    order = [t.name for t in taps if not t.is_logits]
    candidates = {
        name: [t for t in tensors if t.main_path and t.key in layouts[name]] for name in order
    }
    dominant = _dominant_layout(layouts, native)

    def layout_of(name: str, key: str) -> Layout | None:
        fits = layouts[name][key]
        if len(by_key[key].shape) != 4:
            return None  # vectors have no layout
        return fits[0] if len(fits) == 1 else dominant

    def value_of(name: str, tensor: GraphTensor) -> np.ndarray:
        return to_layout(tensor.value, layout_of(name, tensor.key) or "NCHW", "NCHW")

    def neighbours(name: str) -> tuple[str, str]:
        index = order.index(name)
        before = [n for n in order[:index] if n in anchors]
        after = [n for n in order[index + 1 :] if n in anchors]
        return (
            f"'{before[-1]}' match" if before else "the input",
            f"'{after[0]}' match" if after else "the output",
        )

    unmatched: dict[str, str] = {}
    while True:
        lower, upper = _bounds(order, candidates, anchors)
        forced = False
        for name in order:
            if name in decided or name in unmatched:
                continue
            window = _window(candidates[name], lower[name], upper[name])
            if len(window) == 1:
                decided[name] = _order_match(
                    name,
                    window[0],
                    candidates,
                    anchors,
                    order,
                    shapes,
                    layout_of(name, window[0].key),
                )
                anchors[name] = window[0]
                forced = True
        if forced:
            continue
        pending = [n for n in order if n not in decided and n not in unmatched]
        if not pending:
            break
        name = pending[0]
        window = _window(candidates[name], lower[name], upper[name])
        shape = format_shape((1, *shapes[name]))
        before, after = neighbours(name)
        if not window:
            off_path = [t for t in tensors if t.key in layouts[name] and not t.main_path]
            if not candidates[name]:
                reason = f"no tensor of shape {shape} (NCHW or NHWC) on the graph's main path"
                if off_path:
                    reason += (
                        f" ({len(off_path)} inside branches, e.g. '{_short(off_path[0].key)}')"
                    )
            else:
                reason = (
                    f"no tensor of shape {shape} left between {before} and {after} in graph order"
                )
            unmatched[name] = reason
            continue
        match = _numeric(
            name,
            window,
            value_of,
            reference[name][:1],
            budget(name),
            shape,
            before,
            after,
            image,
            layout_of,
        )
        if isinstance(match, TapMatch):
            decided[name] = match
            anchors[name] = by_key[cast(str, match.tensor)]
        else:
            unmatched[name] = match
    for name, reason in unmatched.items():
        decided[name] = TapMatch(name, "unmatched", None, None, reason)
    return [decided[t.name] for t in taps]


def _explicit(
    tap: Tap,
    entry: TapMapEntry,
    by_key: Mapping[str, GraphTensor],
    keys: set[str],
    reference: tuple[int, ...],
) -> TapMatch:
    tensor = by_key.get(entry.tensor)
    if tensor is None:
        what = "not a float tensor computed at run time" if entry.tensor in keys else "no tensor"
        raise TapError(f"tap map: tap '{tap.name}' -> '{entry.tensor}': {what} in the artifact")
    fits = _tap_layout(reference, tensor.shape) or []
    if entry.layout is not None and entry.layout not in fits or not fits:
        raise TapError(
            f"tap map: tap '{tap.name}' -> '{entry.tensor}' has shape "
            f"{format_shape(tensor.shape)}, the reference tap is {format_shape((1, *reference))} "
            f"NCHW{' (layout ' + entry.layout + ' given)' if entry.layout else ''}"
        )
    if entry.layout is None and len(fits) > 1:
        raise TapError(
            f"tap map: tap '{tap.name}' -> '{entry.tensor}' {format_shape(tensor.shape)} fits "
            'NCHW and NHWC; give its layout: {tensor = ..., layout = "NHWC"}'
        )
    layout = entry.layout or fits[0]
    given = "given" if entry.layout else "from its shape"
    return TapMatch(
        tap.name,
        "explicit",
        entry.tensor,
        layout,
        f"tap map -> '{_short(entry.tensor)}' ({tensor.op}), layout {layout} {given}",
    )


def _dominant_layout(layouts: Mapping[str, Mapping[str, list[Layout]]], native: Layout) -> Layout:
    counts = Counter(f[0] for per_tap in layouts.values() for f in per_tap.values() if len(f) == 1)
    return counts.most_common(1)[0][0] if counts else native


def _bounds(
    order: Sequence[str],
    candidates: Mapping[str, Sequence[GraphTensor]],
    anchors: Mapping[str, GraphTensor],
) -> tuple[dict[str, int | None], dict[str, int | None]]:
    """Earliest and latest position each tap can take in an in-order assignment."""
    lower: dict[str, int | None] = {}
    upper: dict[str, int | None] = {}
    position = -2
    for name in order:
        if name in anchors:
            position = lower[name] = anchors[name].position
            continue
        after = [t.position for t in candidates[name] if t.position > position]
        lower[name] = after[0] if after else None
        position = after[0] if after else position
    position = 1 << 60
    for name in reversed(order):
        if name in anchors:
            position = upper[name] = anchors[name].position
            continue
        before = [t.position for t in candidates[name] if t.position < position]
        upper[name] = before[-1] if before else None
        position = before[-1] if before else position
    return lower, upper


def _window(
    candidates: Sequence[GraphTensor], low: int | None, high: int | None
) -> list[GraphTensor]:
    if low is None or high is None:
        return []
    return [t for t in candidates if low <= t.position <= high]


def _order_match(
    name: str,
    tensor: GraphTensor,
    candidates: Mapping[str, Sequence[GraphTensor]],
    anchors: Mapping[str, GraphTensor],
    order: Sequence[str],
    shapes: Mapping[str, tuple[int, ...]],
    layout: Layout | None,
) -> TapMatch:
    index = order.index(name)
    before = [n for n in order[:index] if n in anchors]
    start = anchors[before[-1]].position if before else -2
    after_previous = [t for t in candidates[name] if t.position > start]
    shape = format_shape(tensor.shape)
    previous = f"'{before[-1]}' match" if before else "the input"
    where = _where(tensor, layout)
    if len(after_previous) == 1:
        return TapMatch(
            name,
            "shape-unique",
            tensor.key,
            layout,
            f"{where}: only tensor of shape {shape} on the main path after {previous}",
        )
    rank = after_previous.index(tensor) + 1
    others = [
        n
        for n in order[index + 1 :]
        if shapes[n] == shapes[name] and any(t in after_previous for t in candidates[n])
    ]
    return TapMatch(
        name,
        "shape-order",
        tensor.key,
        layout,
        f"{where}: {len(after_previous)} tensors of shape {shape} on the main path after "
        f"{previous}; graph order forces the {_ordinal(rank)} (the later ones belong to "
        f"{', '.join(others) or 'later taps'})",
    )


def _numeric(
    name: str,
    window: Sequence[GraphTensor],
    value_of: Callable[[str, GraphTensor], np.ndarray],
    reference: np.ndarray,
    limit: float | None,
    shape: str,
    before: str,
    after: str,
    image: str,
    layout_of: Callable[[str, str], Layout | None],
) -> TapMatch | str:
    """The numeric tie-break: a match, or the reason the tap stays unmatched."""
    ref = reference.astype(np.float64)
    scale = max(float(np.abs(ref).max()), float(np.finfo(np.float64).tiny))
    errors = [
        (float(np.abs(value_of(name, t).astype(np.float64) - ref).max()) / scale, t) for t in window
    ]
    errors.sort(key=lambda pair: pair[0])
    listed = ", ".join(f"'{_short(t.key, 40)}' {e:.2g}" for e, t in errors[:4])
    head = f"{len(window)} tensors of shape {shape} between {before} and {after}"
    if limit is None:
        return f"{head}; no max_abs_norm budget to tell them apart by value ({listed})"
    within = [(e, t) for e, t in errors if e <= limit]
    clear = all(e > CLEAR_MARGIN * limit for e, t in errors if (e, t) not in within)
    if len(within) == 1 and clear:
        error, tensor = within[0]
        layout = layout_of(name, tensor.key)
        return TapMatch(
            name,
            "numeric",
            tensor.key,
            layout,
            f"{_where(tensor, layout)}: {head}; on image '{image}' only it is within the "
            f"max_abs_norm budget ({error:.2g} <= {limit:.0e}), the others over {CLEAR_MARGIN:g}x "
            f"it (candidates: {listed})",
        )
    if not within:
        why = f"none is within the max_abs_norm budget {limit:.0e} on image '{image}'"
    elif len(within) > 1:
        why = f"{len(within)} are within the budget {limit:.0e} on image '{image}'"
    else:
        why = f"the runner-up is not over {CLEAR_MARGIN:g}x the budget {limit:.0e}"
    return f"ambiguous: {head}; {why} (candidates: {listed})"


# -- running ---------------------------------------------------------------------------


class ExternalRunner(Runner):
    """Wraps a runtime's runner: per-tap layouts, fixed batch sizes, the chosen output.

    The inner runner feeds its declared input layout and returns taps as the file has
    them; this converts each tap by the layout its match declared (never by shape).
    """

    input_layout = "NCHW"
    tap_layout = "NCHW"

    def __init__(
        self,
        name: str,
        inner: Runner,
        tap_layouts: Mapping[str, Layout | None],
        batch: int | None,
        logits: Sequence[str],
        output_tap: bool,
    ) -> None:
        super().__init__(name)
        self.inner = inner
        self.tap_layouts = dict(tap_layouts)
        self.batch = batch
        self.logits = tuple(logits)
        self.output_tap = output_tap

    def _activate(self) -> None:
        self.inner.activate()

    def _deactivate(self) -> None:
        self.inner.deactivate()

    def _run(self, feed: np.ndarray, taps: Sequence[Tap]) -> dict[str, np.ndarray]:
        inner_taps = [t for t in taps if t.name not in self.logits]
        if self.output_tap:
            inner_taps.append(Tap(_OUTPUT_TAP, ""))
        size = self.batch or len(feed)
        padded = -len(feed) % size
        if padded:
            feed = np.concatenate([feed, np.zeros((padded, *feed.shape[1:]), feed.dtype)])
        parts = [self.inner.run(feed[i : i + size], inner_taps) for i in range(0, len(feed), size)]
        merged = {k: np.concatenate([p[k] for p in parts])[: len(feed) - padded] for k in parts[0]}
        result = {OUTPUT: merged.pop(_OUTPUT_TAP) if self.output_tap else merged[OUTPUT]}
        for tap in inner_taps:
            if tap.name != _OUTPUT_TAP:
                layout = self.tap_layouts.get(tap.name) or "NCHW"
                result[tap.name] = to_layout(merged[tap.name], layout, "NCHW")
        for name in self.logits:
            result[name] = result[OUTPUT]
        return result


@dataclasses.dataclass(frozen=True)
class Inspection:
    """A file made elsewhere, opened and read (no image run yet)."""

    probe: Probe
    detection: Detection
    explicit: Mapping[str, TapMapEntry]
    variant: Variant

    def artifact(self, lines: Sequence[str], matches: Sequence[TapMatch] = ()) -> Artifact:
        """The report's view of the file: hash, size, what was detected, how taps matched."""
        path = self.detection.path
        sha256 = file_sha256(path)
        notes = list(lines)
        if matches:
            notes.append(match_summary(matches))
            notes += [
                f"  {m.tap}: {m.how}: {m.evidence}" for m in matches if m.how != "final output"
            ]
        metadata: dict[str, Any] = {
            "exporter": "made elsewhere",
            "runtime": self.detection.runtime,
            "format": self.detection.format,
            "bytes": path.stat().st_size,
            "sha256": sha256,
            "input_layout": self.detection.layout,
            "batch": self.detection.batch,
            "detected": list(lines),
            "tap_summary": match_summary(matches) if matches else None,
            "tap_matching": [m.to_dict() for m in matches],
            "notes": notes,
        }
        return Artifact("external", path, sha256[:20], metadata, built=False)


@dataclasses.dataclass(frozen=True)
class ExternalPlan:
    """An inspected file with its taps located, ready to run on the fixtures."""

    inspection: Inspection
    matches: tuple[TapMatch, ...]
    artifact: Artifact
    runner: ExternalRunner

    @property
    def detection(self) -> Detection:
        return self.inspection.detection

    @property
    def variant(self) -> Variant:
        return self.inspection.variant

    @property
    def compared(self) -> list[str]:
        return [m.tap for m in self.matches if m.tensor is not None]


def match_summary(matches: Sequence[TapMatch]) -> str:
    """``taps: 20 of 21 compared (1 final output, 9 shape-unique, ...); 1 unmatched ...``"""
    counts = Counter(m.how for m in matches)
    matched = len(matches) - counts.get("unmatched", 0)
    kinds = ("final output", "explicit", "shape-unique", "shape-order", "numeric")
    hows = ", ".join(f"{counts[h]} {h}" for h in kinds if counts.get(h))
    text = f"taps: {matched} of {len(matches)} compared ({hows})"
    if counts.get("unmatched"):
        text += f"; {counts['unmatched']} unmatched, left out of the verdict"
    return text


def inspect_artifact(
    session: Session,
    path: Path | str,
    runtime: str | None = None,
    tap_map: Path | str | None = None,
    input_layout: str | None = None,
) -> Inspection:
    """Open the file and read what it says about itself; one-line ParityError on bad input."""
    path = Path(path)
    runtime, what = sniff_runtime(path, runtime)
    lazy.require(RUNTIMES[runtime])
    probe = PROBES[runtime](path, session.config.threads)
    probe.load()
    detection = detect(probe, session.card, what, input_layout)
    explicit = load_tap_map(Path(tap_map), session.taps) if tap_map is not None else {}
    variant = Variant(
        f"external_{runtime}",
        runtime,
        "parity.external:ExternalRunner",
        None,
        f"{path.name} ({what}), made elsewhere",
        RUNTIMES[runtime],
    )
    return Inspection(probe, detection, explicit, variant)


def locate(session: Session, inspection: Inspection) -> ExternalPlan:
    """Run the first image once with every tensor exposed; locate the taps; build the runner.

    Exceptions from the runtime itself propagate (the caller makes them a failed result).
    """
    probe, detection, variant = inspection.probe, inspection.detection, inspection.variant
    path = detection.path
    session.progress(f"running {path.name} once with every tensor exposed, to locate the taps")
    reference = session.reference
    feed = to_layout(session.batch[:1], "NCHW", detection.layout)
    runs = detection.batch or 1
    if runs > 1:  # a fixed batch: the first image, padded with zeros
        feed = np.concatenate([feed, np.zeros((runs - 1, *feed.shape[1:]), feed.dtype)])
    output, tensors, keys = probe.discover(feed, detection.output.name)
    output = output[:1]
    for tensor in tensors:  # keep the first image only
        if tensor.shape and tensor.shape[0] == runs:
            tensor.shape, tensor.value = (1, *tensor.shape[1:]), tensor.value[:1]
    classes = session.card.num_classes
    if output.shape != (1, classes):
        raise ParityError(
            f"{path}: output '{detection.output.name}' gives shape {format_shape(output.shape)} "
            f"for one image; model card '{session.card.name}' has {classes} classes"
        )
    lines = list(detection.lines)
    if (output >= 0).all() and np.allclose(output.sum(axis=1), 1.0, atol=1e-3):
        lines.append(
            "detected: WARNING the output sums to 1 per image: probabilities (softmax inside "
            "the file), not logits; the logits tap will not match torch"
        )
    policy = session.policy

    def budget(tap: str) -> float | None:
        return policy.budget(session.card.name, variant.name, tap).limits.get("max_abs_norm")

    matches = match_taps(
        session.taps,
        reference,
        tensors,
        keys,
        inspection.explicit,
        budget,
        NATIVE_LAYOUT[probe.runtime],
        detection.output.name,
        session.fixtures[0].name,
    )
    fetch = {m.tap: cast(str, m.tensor) for m in matches if m.tensor and m.how != "final output"}
    output_tap = probe.runtime == "onnxruntime" and probe.outputs()[0].name != detection.output.name
    if output_tap:
        fetch[_OUTPUT_TAP] = detection.output.name
    runner = ExternalRunner(
        variant.name,
        probe.runner(variant.name, fetch, detection),
        {m.tap: m.layout for m in matches},
        detection.batch,
        [m.tap for m in matches if m.how == "final output"],
        output_tap,
    )
    return ExternalPlan(inspection, tuple(matches), inspection.artifact(lines, matches), runner)


def plan_external(
    session: Session,
    path: Path | str,
    runtime: str | None = None,
    tap_map: Path | str | None = None,
    input_layout: str | None = None,
) -> ExternalPlan:
    """Inspect and locate in one call (for exploring a file: which taps match, and how)."""
    return locate(session, inspect_artifact(session, path, runtime, tap_map, input_layout))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def check_external(
    session: Session,
    path: Path | str,
    runtime: str | None = None,
    tap_map: Path | str | None = None,
    input_layout: str | None = None,
) -> VariantResult:
    """Live check of a file made elsewhere against the torch reference of ``session``.

    Bad input (not a model, wrong classes, wrong input size, ambiguous layout, a bad tap
    map) raises a one-line :class:`ParityError` before anything runs; the runtime failing
    on the file is a failed result, as for built-in artifacts.
    """
    from parity.result import VariantResult

    inspection = inspect_artifact(session, path, runtime, tap_map, input_layout)
    _ = session.reference  # the torch reference is not part of the artifact's time
    start = time.perf_counter()
    try:
        plan = locate(session, inspection)
        taps = [t for t in session.taps if t.name in plan.compared]
        session.progress(f"running {plan.variant.name} on {len(session.fixtures)} images")
        with plan.runner as runner:
            obtained = runner.run(session.batch, taps)
    except ParityError:
        raise
    except Exception as exc:  # a runtime failing on its artifact is a failed check
        artifact = inspection.artifact(inspection.detection.lines)
        seconds = time.perf_counter() - start
        return VariantResult(inspection.variant, None, artifact, seconds, _first_line(exc))
    verdict = compare_taps(
        session.card.name, plan.variant.name, taps, session.reference, obtained, session.policy
    )
    return VariantResult(plan.variant, verdict, plan.artifact, time.perf_counter() - start)


def check_artifact(
    path: Path | str,
    model: str = "mobilenet_v2",
    *,
    runtime: str | None = None,
    tap_map: Path | str | None = None,
    input_layout: str | None = None,
    session: Session | None = None,
    tolerances: Path | None = None,
) -> VariantResult:
    """pytest-friendly: check one file made elsewhere; pass ``session`` to share a reference."""
    from parity.harness import RunConfig, Session

    if session is None:
        session = Session(RunConfig(model=model, tolerances=tolerances))
    return check_external(session, path, runtime, tap_map, input_layout)


def assert_artifact_parity(path: Path | str, model: str = "mobilenet_v2", **kwargs: Any) -> None:
    """Fail (AssertionError) with the first divergent tap unless every compared tap passes."""
    result = check_artifact(path, model, **kwargs)
    if result.error is not None:
        raise AssertionError(f"{path}: {result.error}")
    assert result.verdict is not None
    assert result.passed, f"{path}: {result.verdict.explain()}"
