"""Reads a Keras file made elsewhere: layers, their outputs on one image."""

from __future__ import annotations

import zipfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from parity import lazy
from parity.backends.keras import internals
from parity.detect import Detection, GraphTensor, Probe, TensorInfo, main_path
from parity.errors import ArtifactError, ParityError, runtime_failure
from parity.runner import Runner


class KerasProbe(Probe):
    runtime = "keras"
    native_layout = "NHWC"
    label = "Keras"
    kind = ".keras archives"

    @classmethod
    def recognise(cls, path: Path, head: bytes, hint: str | None) -> str | None:
        if head.startswith(b"\x89HDF"):
            return "Keras HDF5 file"
        if not head.startswith(b"PK\x03\x04"):
            return None
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
        except zipfile.BadZipFile as exc:
            raise ArtifactError(f"{path}: a damaged zip archive ({exc})") from None
        if "config.json" not in names:
            raise ParityError(
                f"{path}: a zip archive without config.json, not a Keras 3 .keras file"
            )
        return "Keras 3 archive (zip with config.json)"

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
        return [self._info(t, internals.producer(t).name) for t in self.model.inputs]

    def outputs(self) -> list[TensorInfo]:
        return [self._info(t, internals.producer(t).name) for t in self.model.outputs]

    def summary(self) -> str:
        kinds = Counter(type(layer).__name__ for layer in self.layers)
        common = ", ".join(f"{n} {kind}" for kind, n in kinds.most_common(4))
        return f"Keras {type(self.model).__name__} '{self.model.name}', {len(self.layers)} layers ({common}, ...)"  # noqa: E501

    def _producers(self, layer: Any) -> list[str]:
        return [internals.producer(t).name for t in internals.first_call_inputs(layer)]

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
        with runtime_failure(f"{self.path}: Keras failed running it"):
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
        main = main_path(births, deaths, len(self.layers))
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
        from parity.backends.keras.runner import KerasRunner

        runner: Runner = KerasRunner(name, self.model, tap_layers=tensors, threads=self.threads)
        runner.input_layout = detection.layout
        runner.tap_layout = "NCHW"  # taps come back as the file has them; converted per tap
        return runner
