"""Keras 3 runner (TensorFlow backend, NHWC): taps are outputs of named layers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity import lazy
from parity.backends.keras.internals import nodes_by_depth
from parity.errors import ArtifactError, TapError, runtime_failure
from parity.runner import OUTPUT, Runner
from parity.taps import Tap


class KerasRunner(Runner):
    """Runs a ``.keras`` file (or a live ``keras.Model``) on the CPU.

    Args:
        name: variant name.
        source: path of a ``.keras`` file, or a ``keras.Model``.
        tap_layers: tap name -> Keras layer name whose output is the tap.
        threads: TensorFlow intra-op threads (set once per process, before first use).
    """

    input_layout = "NHWC"
    tap_layout = "NHWC"

    def __init__(
        self,
        name: str,
        source: Path | Any,
        tap_layers: Mapping[str, str] | None = None,
        threads: int = 2,
    ) -> None:
        super().__init__(name)
        self.source = source
        self.tap_layers = dict(tap_layers or {})
        self.threads = threads
        self._models: dict[tuple[str, ...], Any] = {}

    def _activate(self) -> None:
        tf = lazy.tensorflow()
        self.keras = lazy.require("keras")
        if not tf.config.threading.get_intra_op_parallelism_threads():
            try:
                tf.config.threading.set_intra_op_parallelism_threads(self.threads)
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:  # TF already initialised its thread pools in this process
                pass
        if isinstance(self.source, str | Path):
            path = Path(self.source)
            if not path.is_file():
                raise ArtifactError(f"{path}: Keras file not found")
            with runtime_failure(f"{path}: Keras cannot load it"):
                self.model = self.keras.models.load_model(path, compile=False)
        else:
            self.model = self.source
        self._models.clear()

    def _deactivate(self) -> None:
        self._models.clear()

    def _tapped_model(self, taps: Sequence[Tap]) -> Any:
        key = tuple(t.name for t in taps)
        if key not in self._models:
            outputs = [self.model.output]
            for tap in taps:
                if tap.name not in self.tap_layers:
                    raise TapError(f"{self.name}: no Keras layer is mapped to tap '{tap.name}'")
                try:
                    outputs.append(self.model.get_layer(self.tap_layers[tap.name]).output)
                except ValueError:
                    raise TapError(
                        f"{self.name}: tap '{tap.name}': no layer "
                        f"'{self.tap_layers[tap.name]}' in the Keras model"
                    ) from None
            with runtime_failure(f"{self.name}: Keras cannot build the tapped model"):
                self._models[key] = self.keras.Model(self.model.inputs, outputs)
        return self._models[key]

    def _run(self, feed: np.ndarray, taps: Sequence[Tap]) -> dict[str, np.ndarray]:
        values = run_dropping(self.keras, self._tapped_model(taps), feed)
        arrays = [np.asarray(v) for v in values]
        result = {OUTPUT: arrays[0]}
        result.update({tap.name: a for tap, a in zip(taps, arrays[1:], strict=True)})
        return result


def run_dropping(keras: Any, model: Any, feed: np.ndarray) -> list[Any]:
    """``model([feed], training=False)``'s outputs, each intermediate dropped after its last use.

    Keras runs a functional model node by node and keeps every intermediate tensor to the
    end of the call (mobilenet_v2, 16 images: +1.3 GB). This walks the same nodes in the
    same order with the same eager kernels (the outputs are bitwise Keras's; a smaller
    batch would not be: TF picks kernels by batch size), freeing each tensor once the last
    node reading it has run (+0.35 GB).
    """
    nodes = [
        node
        for depth in sorted(nodes_by_depth(model), reverse=True)
        for node in nodes_by_depth(model)[depth]
        if node.operation is not None and not node.is_input
    ]
    readers = Counter(id(x) for node in nodes for x in node.input_tensors)
    kept = {id(x) for x in model.outputs}
    tensors = {id(x): keras.ops.convert_to_tensor(feed) for x in model.inputs}
    for node in nodes:
        args, kwargs = node.arguments.fill_in(tensors)
        if "training" in getattr(node.operation, "_call_context_args", ()):
            kwargs["training"] = False
        with runtime_failure(f"Keras failed in layer '{node.operation.name}'"):
            outputs = node.operation(*args, **kwargs)
        tensors.update(zip((id(x) for x in node.outputs), keras.tree.flatten(outputs), strict=True))
        for x in node.input_tensors:
            readers[id(x)] -= 1
            if readers[id(x)] == 0 and id(x) not in kept:
                del tensors[id(x)]
    return [tensors[id(x)] for x in model.outputs]
