"""ONNX Runtime runner: taps by adding intermediate values as graph outputs.

Taps are located from module scopes recorded by the torch exporters: TorchScript node
names (``/features/features.3/conv/conv.0/Conv``) or the dynamo exporter's
``pkg.torch.onnx.name_scopes`` metadata. The output of module ``M`` is the one value
produced inside ``M``'s scope and consumed outside it (or returned by the graph); its
input is the one non-constant value consumed inside and produced outside. Zero or
several candidates is an error naming the tap. Graphs without torch scopes (tf2onnx)
come with an explicit tap -> value map from their exporter (``tap_values``) instead.
"""

from __future__ import annotations

import ast
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity import atomic, lazy
from parity.errors import ArtifactError, RuntimeFailure, TapError, runtime_failure
from parity.paths import cache_dir
from parity.runner import OUTPUT, Runner
from parity.taps import Tap

#: The CPU execution provider (every other provider falls back to it per node).
CPU = "CPUExecutionProvider"

#: Graph optimisation levels by name.
OPTIMIZATION_LEVELS = ("disabled", "basic", "extended", "all")

Scope = tuple[str, ...]


def torch_scope(node: Any) -> Scope:
    """Module paths enclosing a node of a torch export, outermost first, root ``""`` first."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            names = ast.literal_eval(prop.value)
            return tuple(names[:-1])  # the last entry names the op itself
    if node.name.startswith("/"):
        return ("", *node.name.strip("/").split("/")[:-1])
    return ("",)


def locate_taps(
    model: Any, taps: Sequence[Tap], scope_of: Callable[[Any], Scope]
) -> dict[str, str]:
    """Tap name -> ONNX value name, by module scope."""
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    for node in graph.node:  # nodes are topologically sorted
        if node.op_type == "Constant" or (node.input and all(i in constants for i in node.input)):
            constants.update(node.output)
    graph_outputs = {o.name for o in graph.output}
    scopes = [scope_of(node) for node in graph.node]
    located = {}
    for tap in taps:
        inside = [n for n, scope in zip(graph.node, scopes, strict=True) if tap.module in scope]
        if not inside:
            raise TapError(f"tap '{tap.name}': no node of module '{tap.module}' in the ONNX graph")
        ids = {id(n) for n in inside}
        produced = {v for n in inside for v in n.output}
        if tap.point == "output":
            used_outside = {v for n in graph.node if id(n) not in ids for v in n.input}
            candidates = {v for v in produced if v in used_outside or v in graph_outputs}
        else:
            consumed = {v for n in inside for v in n.input if v}
            candidates = consumed - produced - constants
        if len(candidates) != 1:
            raise TapError(
                f"tap '{tap.name}': module '{tap.module}' has {len(candidates)} {tap.point} "
                f"values in the ONNX graph ({sorted(candidates)[:4]}); expected exactly one"
            )
        located[tap.name] = candidates.pop()
    return located


def provider_unavailable(options: Mapping[str, Any]) -> str | None:
    """Why the installed ONNX Runtime cannot run ``options["provider"]``, or ``None``."""
    provider = options.get("provider", CPU)
    ort = lazy.require("onnxruntime")
    available = ort.get_available_providers()
    if provider not in available:
        return (
            f"onnxruntime {ort.__version__} here has no {provider} (available: "
            f"{', '.join(available)}); it needs an onnxruntime build with it (e.g. "
            "onnxruntime-gpu for CUDA/TensorRT, onnxruntime-openvino) and its device"
        )
    return None


def tapped_models(
    model: bytes,
    taps: Sequence[Tap],
    scope_of: Callable[[Any], Scope],
    tap_values: Mapping[str, str] | None,
) -> Path:
    """Where the model with ``taps`` as outputs is kept (``<key>.onnx`` + ``<key>.json``, the
    names to fetch) in parity's cache, keyed by everything it is derived from: the file's
    bytes, the taps, how they are located and onnx's version. Never beside the file (it may
    be the user's)."""
    parts = {
        "format": 1,
        "model": hashlib.sha256(model).hexdigest(),
        "taps": [t.to_dict() for t in taps],
        "scope_of": f"{scope_of.__module__}.{scope_of.__qualname__}",
        "tap_values": dict(tap_values) if tap_values is not None else None,
        "onnx": lazy.package_version("onnx"),
    }
    key = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]
    folder = cache_dir() / "onnxruntime-tapped"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{key}.onnx"


class OnnxRuntimeRunner(Runner):
    """Runs an ``.onnx`` file on an ONNX Runtime execution provider (default: CPU).

    :meth:`activate` reads the file; each run's session (one per set of taps) is built
    at the first run that asks for it, from the tapped model kept in parity's cache
    (:func:`tapped_models`) when there is one, so ONNX Runtime's refusal of a file is
    raised by the first run.

    Args:
        name: variant name.
        path: the ONNX file.
        threads: intra-op threads, fixed so results do not depend on the machine.
        graph_optimization: one of :data:`OPTIMIZATION_LEVELS`.
        input_layout: layout of the model's input (``NHWC`` for a tf2onnx export).
        tap_layout: layout of its intermediate values.
        scope_of: how to read a node's module scope (default: torch exporters).
        tap_values: tap name -> ONNX value name, recorded by exporters whose graphs carry
            no torch module scopes (tf2onnx); when given, used instead of ``scope_of``.
        provider: the execution provider (``CUDAExecutionProvider``...); nodes it does not
            support fall back to the CPU provider, as they do for users.
    """

    def __init__(
        self,
        name: str,
        path: Path,
        threads: int = 2,
        graph_optimization: str = "all",
        input_layout: str = "NCHW",
        tap_layout: str = "NCHW",
        scope_of: Callable[[Any], Scope] = torch_scope,
        tap_values: Mapping[str, str] | None = None,
        provider: str = CPU,
    ) -> None:
        super().__init__(name)
        if graph_optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(f"graph_optimization must be one of {OPTIMIZATION_LEVELS}")
        self.path = Path(path)
        self.threads = threads
        self.graph_optimization = graph_optimization
        self.input_layout = input_layout  # type: ignore[assignment]
        self.tap_layout = tap_layout  # type: ignore[assignment]
        self.scope_of = scope_of
        self.tap_values = None if tap_values is None else dict(tap_values)
        self.provider = provider
        self._sessions: dict[frozenset[str], tuple[Any, list[str]]] = {}
        self._bytes = b""

    def _activate(self) -> None:
        self.ort = lazy.require("onnxruntime")
        self._sessions.clear()
        if not self.path.is_file():
            raise ArtifactError(f"{self.path}: ONNX file not found")
        self._bytes = self.path.read_bytes()
        # A session per set of taps, built at the first run that asks for it: a tapped
        # run never builds the plain session it would not use.

    def _deactivate(self) -> None:
        self._sessions.clear()

    def _session(self, model_bytes: bytes) -> Any:
        options = self.ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        level = self.ort.GraphOptimizationLevel
        options.graph_optimization_level = {
            "disabled": level.ORT_DISABLE_ALL,
            "basic": level.ORT_ENABLE_BASIC,
            "extended": level.ORT_ENABLE_EXTENDED,
            "all": level.ORT_ENABLE_ALL,
        }[self.graph_optimization]
        options.log_severity_level = 3
        providers = list(dict.fromkeys([self.provider, CPU]))
        try:
            session = self.ort.InferenceSession(model_bytes, options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types
            first_line = (
                str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            )
            raise RuntimeFailure(
                f"{self.path}: ONNX Runtime cannot load it ({first_line})"
            ) from None
        if self.provider not in session.get_providers():  # ORT dropped it: never run on CPU
            raise RuntimeFailure(
                f"{self.path}: ONNX Runtime did not enable {self.provider} "
                f"(session providers: {', '.join(session.get_providers())})"
            )
        return session

    def _tapped_session(self, taps: Sequence[Tap]) -> tuple[Any, list[str]]:
        key = frozenset(t.name for t in taps)
        if key not in self._sessions:
            if taps:
                data, fetch = self._tapped_model(taps)
                session = self._session(data)
            else:
                session = self._session(self._bytes)
                fetch = [session.get_outputs()[0].name]
            self._sessions[key] = (session, fetch)
        return self._sessions[key]

    def _tapped_model(self, taps: Sequence[Tap]) -> tuple[bytes, list[str]]:
        """The model with the taps' values as extra outputs, and the names to fetch (the
        model's output first), from :func:`tapped_models` when this file was tapped for
        these taps before: a warm run then imports no ``onnx`` (its import alone is ~1 s
        of CPU, most of it ``ml_dtypes``)."""
        store = tapped_models(self._bytes, taps, self.scope_of, self.tap_values)
        if store.with_suffix(".json").is_file() and store.is_file():
            fetch: list[str] = json.loads(store.with_suffix(".json").read_text())["fetch"]
            return store.read_bytes(), fetch
        self._tapped_session(())  # ONNX Runtime loads the file itself first, or says why not
        onnx = lazy.require("onnx")
        model = onnx.load_from_string(self._bytes)
        located = (
            locate_taps(model, taps, self.scope_of)
            if self.tap_values is None
            else self._mapped_taps(model, taps)
        )
        existing = {o.name for o in model.graph.output}
        fetch = [model.graph.output[0].name, *(located[t.name] for t in taps)]
        for tap in taps:
            value = located[tap.name]
            if value not in existing:
                model.graph.output.append(onnx.ValueInfoProto(name=value))
                existing.add(value)
        data: bytes = model.SerializeToString()
        atomic.write_bytes(store, data)
        atomic.write_text(store.with_suffix(".json"), json.dumps({"fetch": fetch}))
        return data, fetch

    def _mapped_taps(self, model: Any, taps: Sequence[Tap]) -> dict[str, str]:
        """Tap name -> value name from :attr:`tap_values`, each checked to exist."""
        assert self.tap_values is not None
        values = {v for n in model.graph.node for v in n.output}
        located = {}
        for tap in taps:
            value = self.tap_values.get(tap.name)
            if value is None:
                raise TapError(f"{self.name}: no ONNX value is mapped to tap '{tap.name}'")
            if value not in values:
                raise TapError(
                    f"{self.name}: tap '{tap.name}': no value '{value}' in the ONNX graph"
                )
            located[tap.name] = value
        return located

    def _run(self, feed: np.ndarray, taps: Sequence[Tap]) -> dict[str, np.ndarray]:
        session, fetch = self._tapped_session(taps)
        with runtime_failure(f"{self.path}: ONNX Runtime failed running it"):
            values = session.run(fetch, {session.get_inputs()[0].name: feed})
        result = {OUTPUT: values[0]}
        result.update({tap.name: value for tap, value in zip(taps, values[1:], strict=True)})
        return result
