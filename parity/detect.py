"""What a file made elsewhere says about itself: runtime, input, output, layout, batch.

The runtime is read from the bytes by each backend's :class:`Probe` (its
``parity/backends/<name>/probe.py``; :mod:`parity.readers` asks them); :func:`detect` reads
the input (name, dtype, quantisation, batch, layout by the axis holding the card's 3
channels, a converter's layout adapter) and picks the logits output. See
:mod:`parity.external` for the whole check.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np

from parity.errors import ParityError
from parity.preprocess import Layout
from parity.runner import Runner

LAYOUTS: tuple[Layout, ...] = ("NCHW", "NHWC")

Shape = tuple[int | None, ...]


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


def format_shape(shape: Sequence[int | None]) -> str:
    return "(" + ",".join("batch" if d is None else str(d) for d in shape) + ")"


def short_key(key: str, limit: int = 60) -> str:
    return key if len(key) <= limit else key[: limit - 3] + "..."


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


# -- one probe per runtime (in its backend): inputs, outputs, graph, discovery run, runner --


class Probe(abc.ABC):
    """Reads one kind of file: its inputs and outputs, and every tensor on one image."""

    #: The backend (runtime family) that runs the file.
    runtime: str
    #: The layout the runtime's ops compute in (ONNX Conv: NCHW; TFLite/Keras: NHWC).
    native_layout: Layout
    #: The format's short name ("TFLite") and what files it reads, for error messages.
    label: str
    kind: str
    #: True when the format has no magic number (asked after the others).
    weak_magic: bool = False

    @classmethod
    @abc.abstractmethod
    def recognise(cls, path: Path, head: bytes, hint: str | None) -> str | None:
        """What the file is ("TFLite flatbuffer ...") if it is this runtime's, else None.

        ``head``: its first 16 bytes; ``hint``: the runtime named by the user or the suffix.
        """

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

    def module_anchors(
        self, taps: Sequence[Any], tensors: Sequence[GraphTensor], shapes: Mapping[str, Shape]
    ) -> dict[str, Any]:
        """Taps the file's own tensor names place (module paths a converter wrote), as
        tap-map entries (:class:`~parity.tapmatch.TapMapEntry`); none by default."""
        return {}

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


def main_path(births: Mapping[str, int], deaths: Mapping[str, int], count: int) -> set[str]:
    """Keys that are the only live data tensor right after the op producing them."""
    live = np.zeros(count + 1, dtype=np.int64)
    for key, birth in births.items():
        death = deaths.get(key, birth)
        if death > birth:
            live[max(birth, 0) : min(death, count)] += 1
    return {k for k, b in births.items() if b >= 0 and deaths.get(k, b) > b and live[b] == 1}


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
        native = probe.native_layout
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
