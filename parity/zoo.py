"""Model cards: what is under test, as data (``models/<name>.toml``).

A card names the torch builder, the weights source, the preprocessing, the tap list
and the Keras twin architecture. Users put their own model under the harness by adding
a card; nothing in ``parity/`` changes. This module reads cards only (numpy-free, no
torch); building the torch module lives in :mod:`parity.weights`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from parity.errors import ModelCardError
from parity.paths import models_dirs
from parity.preprocess import IMAGENET_MEAN, PreprocessSpec
from parity.schema import (
    ConfigError,
    Field,
    boolean,
    check,
    integer,
    list_of,
    number,
    read_config,
    string,
    table,
)
from parity.taps import Tap, taps_from_card

#: The card every command and fixture uses when none is named.
DEFAULT_MODEL = "mobilenet_v2"

#: Named preprocessing recipes a card can start from (then override fields).
PRESETS: dict[str, dict[str, Any]] = {
    # torchvision ImageClassification(resize 256, crop 224, bilinear, antialias).
    "torchvision-imagenet": {},
    # Keras applications "tf" mode: scale to [-1, 1].
    "tf": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
    # Keras applications "caffe" mode: BGR, 0-255, mean subtraction only.
    "caffe": {
        "scale": 1.0,
        "mean": [m * 255 for m in IMAGENET_MEAN],
        "std": [1.0, 1.0, 1.0],
        "channel_order": "BGR",
    },
}


_SIZE = integer(ge=1, le=65536)
_SIZES = Field(either=(_SIZE, list_of(_SIZE, length=(1, 2))))
_CHANNELS = list_of(number(), length=(3,))

#: The ``[preprocess]`` table: a preset plus any :class:`PreprocessSpec` field.
PREPROCESS_SCHEMA: dict[str, Field] = {
    "preset": string(choices=tuple(PRESETS)),
    "exif_transpose": boolean(),
    "alpha": string(choices=("drop", "white", "black")),
    "resize": _SIZES,
    "resize_filter": string(choices=("nearest", "bilinear", "bicubic", "lanczos", "area")),
    "antialias": boolean(),
    "crop": _SIZES,
    "crop_first": boolean(),
    "scale": number(gt=0.0),
    "mean": _CHANNELS,
    "std": list_of(number(gt=0.0, why="std divides"), length=(3,)),
    "channel_order": string(choices=("RGB", "BGR")),
    "layout": string(choices=("NCHW", "NHWC")),
    "dtype": string(choices=("float32", "float16", "float64")),
}

#: A model card file. A new key is one line here (and a field of :class:`ModelCard`).
CARD_SCHEMA = table(
    {
        "builder": string(required=True, pattern=r"[\w.]+:[\w.]+", why="'package.module:function'"),
        "builder_kwargs": table(values=Field()),
        "num_classes": integer(ge=1),
        "torchvision_weights": string(),
        "weights": table({"default": string(), "seed": integer(ge=0)}),
        "keras_twin": string(),
        "preprocess": table(PREPROCESS_SCHEMA),
        "taps": table(
            {
                "stem": string(),
                "blocks": list_of(string()),
                "features": string(),
                "pooled": string(),
                "logits": string(required=True),
            },
            required=True,
        ),
        "heavy": boolean(),
        "calibration": string(),
    }
)


@dataclasses.dataclass(frozen=True)
class ModelCard:
    """One model under test.

    Attributes:
        name: registry name (the card's file stem).
        builder: ``package.module:function`` returning a ``torch.nn.Module``.
        builder_kwargs: keyword arguments for the builder.
        num_classes: size of the logits.
        torchvision_weights: weights enum class name (class names, transforms recipe).
        weights: default weights source (``calibrated``, an enum member name such as
            ``IMAGENET1K_V1``, or a path to a state_dict file).
        seed: seed for the calibrated weights.
        keras_twin: architecture name in :mod:`parity.export.keras` (``None``: no twin).
        preprocess: the fixed preprocessing spec.
        taps: logical taps in forward order.
        heavy: slow to run; kept out of the default test suite.
        path: the card file.
        calibration: folder of int8 calibration images (``{cache}`` expands to the parity
            cache dir; relative paths are from the card's file); ``None``: the bundled
            ``fixtures/calibration`` photos.
    """

    name: str
    builder: str
    builder_kwargs: dict[str, Any]
    num_classes: int
    torchvision_weights: str | None
    weights: str
    seed: int
    keras_twin: str | None
    preprocess: PreprocessSpec
    taps: tuple[Tap, ...]
    heavy: bool
    path: Path
    calibration: str | None = None

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        """NCHW shape of one image."""
        height, width = self.preprocess.input_hw
        return (1, 3, height, width)


def _spec_from_table(table: dict[str, Any], source: Path) -> PreprocessSpec:
    table = dict(table)
    preset = table.pop("preset", "torchvision-imagenet")
    if preset not in PRESETS:
        raise ModelCardError(
            f"{source}: unknown preprocess preset {preset!r}; known: {sorted(PRESETS)}"
        )
    try:
        return PreprocessSpec.from_dict({**PRESETS[preset], **table})
    except (TypeError, ValueError) as exc:
        raise ModelCardError(f"{source}: bad [preprocess] table ({exc})") from None


def load_card(path: Path) -> ModelCard:
    """Parse and validate one card file."""
    data = read_config(path, "model card", ModelCardError)
    try:
        check(data, CARD_SCHEMA, path)
    except ConfigError as exc:
        raise ModelCardError(str(exc)) from None
    weights = data.get("weights", {})
    return ModelCard(
        name=path.stem,
        builder=data["builder"],
        builder_kwargs=dict(data.get("builder_kwargs", {})),
        num_classes=data.get("num_classes", 1000),
        torchvision_weights=data.get("torchvision_weights"),
        weights=weights.get("default", "calibrated"),
        seed=weights.get("seed", 0),
        keras_twin=data.get("keras_twin"),
        preprocess=_spec_from_table(data.get("preprocess", {}), path),
        taps=taps_from_card(data["taps"], str(path)),
        heavy=data.get("heavy", False),
        path=path,
        calibration=data.get("calibration"),
    )


def card_paths(root: Path | None = None) -> dict[str, Path]:
    """Card name -> file, for every ``*.toml`` in ``root`` or the project's card folders.

    A project's own card shadows a bundled card of the same name; files whose name starts
    with ``_`` are not cards.
    """
    folders = (root,) if root else models_dirs()
    return {
        p.stem: p
        for folder in reversed(folders)
        for p in sorted(folder.glob("*.toml"))
        if not p.name.startswith("_")  # templates such as parity init's _example.toml
    }


def list_models(root: Path | None = None, include_heavy: bool = True) -> list[str]:
    """Names of the available model cards."""
    names = []
    for name, path in card_paths(root).items():
        if include_heavy or not load_card(path).heavy:
            names.append(name)
    return names


def get_card(name_or_path: str, root: Path | None = None) -> ModelCard:
    """A card by registry name, or by path to a ``.toml`` file."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml":
        return load_card(candidate)
    paths = card_paths(root)
    if name_or_path not in paths:
        raise ModelCardError(f"unknown model {name_or_path!r}; available: {', '.join(paths)}")
    return load_card(paths[name_or_path])
