"""tf2onnx's conversion of a Keras file, pinned: the same file gives the same graph, names
included, whatever ran before in the process and however busy the machine is.

What moved it (tf2onnx 1.17, TF 2.21, mobilenet_v2 twin, measured):

* **Python's string hash seed.** tf2onnx keeps each value's consumers in sets of node
  names and rewrites the graph in their iteration order, which follows the per-process
  seed. With ``PYTHONHASHSEED=2`` the reshape optimiser never folds ``flatten``'s batch
  size: a ``Shape -> Slice -> Concat`` path stays (145 nodes instead of 139) and the tap
  rule saw two values for 'flatten'. That was the failure once seen "under load": it was
  the seed, not the load (random per process unless set).
* **Memory addresses.** After every optimiser pass tf2onnx resets the graph's node list to
  ``Graph.extract_sub_graph_nodes``, a ``list(set(nodes))``: the order of the nodes' ids.
  Merging duplicate constants keeps the first one in that order, so two fresh processes
  with the same seed kept different ``Relu6_min`` constants (214 lines of node diff).
* **Process state.** Made-up names (``Conv__351``, ``const_fold_opt__641``) come from a
  process-wide counter, so a second conversion in one process numbered them differently.

Pinned here (:func:`convert`): hash randomisation off (the workers start with
``PYTHONHASHSEED=0``; any other process converts in a child that does), the kept nodes in
graph order, optimiser errors raised rather than skipped (a skipped pass is a different
graph), and the made-up names renumbered by the graph's structure (:func:`canonical`).
Measured with these pins: seed 0 and seed 2, and a process that first built and converted
another model named ``mobilenet_v2``, give the same nodes, names and initializers. The TF
graph tf2onnx receives was already the same in every process (grappler's passes run with
``meta_optimizer_timeout_ms`` 0, which means no deadline in TF 2.x: load cannot cut one
short).
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import io
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from parity import lazy
from parity.errors import RuntimeFailure, runtime_failure

#: ONNX opset of the conversion: inside the range tf2onnx 1.17 tests (14-18) and equal to
#: the TorchScript export's (:data:`parity.export.onnx.TORCHSCRIPT_OPSET`), so both ONNX
#: artifacts of a model run the same operator versions in ONNX Runtime. The ops these
#: graphs use (Conv, Clip, Relu, Pad, Add, Mul, MaxPool, GlobalAveragePool, Reshape,
#: MatMul, Transpose) compute the same float32 results at 15 (tf2onnx's default) and 17.
OPSET = 17

_NUMBER = re.compile(r"__\d+(?=(:\d+)?$)")  # the counter in a made-up name
_FAILED = 2  # the pinned child's exit status when tf2onnx or Keras failed (not parity)


def canonical(model: Any) -> None:
    """Renumber the names tf2onnx made up and reorder the graph, in place, so that they follow
    the graph's structure alone (the counter behind ``Conv__351`` depends on what tf2onnx
    did before in the process and on the order it visited nodes in).

    Nodes are put in topological order, choosing among the ready ones by op type, name
    without its number, and the positions of what they read (initializers by name without
    number and content); then every made-up name gets the next number in that order.
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    producer = {v: i for i, node in enumerate(graph.node) for v in node.output}
    placed: dict[int, int] = {}

    def source(value: str) -> tuple[Any, ...]:
        if value in producer:
            node = graph.node[producer[value]]
            return (placed[producer[value]], list(node.output).index(value))
        if value in initializers:
            init = initializers[value]
            content = hashlib.sha256(init.SerializeToString(deterministic=True)).hexdigest()
            return (_NUMBER.sub("", value), content)
        return (value,)

    waiting = {i: {producer[v] for v in node.input if v in producer} for i, node in
               enumerate(graph.node)}  # fmt: skip
    order: list[int] = []
    while len(order) < len(graph.node):
        ready = [i for i, needs in waiting.items() if i not in placed and needs <= placed.keys()]
        key = {
            i: (graph.node[i].op_type, _NUMBER.sub("", graph.node[i].name),
                [source(v) for v in graph.node[i].input])
            for i in ready
        }  # fmt: skip
        first = min(ready, key=lambda i: repr(key[i]))
        placed[first] = len(order)
        order.append(first)
    renamed: dict[str, str] = {}

    def rename(name: str) -> str:
        if name and _NUMBER.search(name) and name not in renamed:
            renamed[name] = _NUMBER.sub(f"__{len(renamed) + 1}", name)
        return renamed.get(name, name)

    nodes = [graph.node[i] for i in order]
    for node in nodes:
        node.input[:] = [rename(v) for v in node.input]
        node.name = rename(node.name)
        node.output[:] = [rename(v) for v in node.output]
    for init in graph.initializer:
        init.name = rename(init.name)
    for info in [*graph.value_info, *graph.input, *graph.output]:
        info.name = rename(info.name)
    copies = [type(node)() for node in nodes]
    for copy, node in zip(copies, nodes, strict=True):
        copy.CopyFrom(node)
    del graph.node[:]
    graph.node.extend(copies)
    first_use = {v: i for i, node in reversed(list(enumerate(copies))) for v in node.input}
    inits = sorted(graph.initializer, key=lambda init: (first_use.get(init.name, -1), init.name))
    copies_init = [type(init)() for init in inits]
    for copy, init in zip(copies_init, inits, strict=True):
        copy.CopyFrom(init)
    del graph.initializer[:]
    graph.initializer.extend(copies_init)


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """The objects alive now are left out of garbage collection until the block ends.

    tf2onnx deep-copies its graph before every optimiser pass; the copies it drops are
    cyclic garbage that only a full collection frees, and CPython defers full collections
    while the long-lived objects (~330k once TensorFlow and Keras are imported) outnumber
    the new ones four to one. Frozen, they no longer count: the copies are freed as they
    go (mobilenet_v2: peak RSS 1.95 -> 1.7 GB; the export is unchanged).
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def pinned(tf2onnx: Any) -> Iterator[None]:
    """tf2onnx made a function of its input alone, for the block (module doc).

    Its made-up-name counter restarts; the nodes kept after each optimiser pass stay in graph
    order (``Graph.extract_sub_graph_nodes`` returns a set's order, by memory address, and the
    graph is reset to it); an optimiser that raises fails the conversion instead of being
    skipped (``TF2ONNX_CATCH_ERRORS`` set: tf2onnx then lets errors through).
    """
    graph_class = tf2onnx.graph.Graph
    extract = graph_class.extract_sub_graph_nodes

    def in_graph_order(graph: Any, *args: Any, **kwargs: Any) -> list[Any]:
        kept = extract(graph, *args, **kwargs)
        position = {id(node): i for i, node in enumerate(graph.get_nodes())}
        return sorted(kept, key=lambda node: (position.get(id(node), len(position)), node.name))

    saved = os.environ.get("TF2ONNX_CATCH_ERRORS")
    tf2onnx.utils.INTERNAL_NAME = 1
    graph_class.extract_sub_graph_nodes = in_graph_order
    os.environ["TF2ONNX_CATCH_ERRORS"] = "FALSE"
    try:
        yield
    finally:
        graph_class.extract_sub_graph_nodes = extract
        if saved is None:
            os.environ.pop("TF2ONNX_CATCH_ERRORS")
        else:
            os.environ["TF2ONNX_CATCH_ERRORS"] = saved


def _convert_here(model: Any, out: Path, opset: int) -> Any:
    """Convert the Keras ``model`` with tf2onnx in this process and save it to ``out``."""
    tf = lazy.tensorflow()
    onnx = lazy.require("onnx")
    tf2onnx = lazy.require("tf2onnx")
    spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="input"),)
    # tf2onnx logs every optimiser pass and TF prints graph-building chatter.
    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    with (
        runtime_failure("tf2onnx failed converting the Keras twin"),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        frozen_heap(),
        pinned(tf2onnx),
    ):
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    canonical(proto)
    onnx.save(proto, str(out))
    return proto


def convert(model: Any, keras_path: Path, out: Path, opset: int = OPSET) -> Any:
    """tf2onnx's conversion of ``model`` (loaded from ``keras_path``), saved to ``out``; the
    ONNX proto.

    Pinned (module doc): in this process when it runs with hash randomisation off, else in a
    child Python started with ``PYTHONHASHSEED=0`` that loads ``keras_path``. Whatever
    tf2onnx raises (or the child's last line of error) is a :class:`RuntimeFailure`.
    """
    if sys.flags.hash_randomization:
        return convert_in_child(keras_path, out, opset)
    return _convert_here(model, out, opset)


def convert_in_child(keras_path: Path, out: Path, opset: int = OPSET) -> Any:
    """:func:`convert` in a child Python started with ``PYTHONHASHSEED=0``."""
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    module = "parity.export.tf2onnx_convert"
    command = [sys.executable, "-m", module, str(keras_path), str(out), str(opset)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = done.stderr.strip().splitlines() or ["no message"]
    if done.returncode == _FAILED:
        raise RuntimeFailure(f"{lines[-1]} (in tf2onnx's pinned child process)")
    if done.returncode != 0:  # parity's own code failed in the child: a bug, with its traceback
        raise RuntimeError(f"tf2onnx's pinned child exited {done.returncode}:\n{done.stderr}")
    return lazy.require("onnx").load(str(out))


if __name__ == "__main__":  # the pinned child of :func:`convert`: KERAS_PATH OUT OPSET
    lazy.ISOLATED = True
    try:
        lazy.tensorflow()
        with runtime_failure(f"Keras could not load {sys.argv[1]}"):
            loaded = lazy.require("keras").models.load_model(sys.argv[1], compile=False)
        _convert_here(loaded, Path(sys.argv[2]), int(sys.argv[3]))
    except RuntimeFailure as exc:
        print(exc, file=sys.stderr)
        sys.exit(_FAILED)
