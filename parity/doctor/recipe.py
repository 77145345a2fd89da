"""A preprocessing recipe: a :class:`PreprocessSpec` plus the choices users make that the
spec does not model (TF's floored crop offset, rounded resize sizes, 16-bit clipping,
per-image standardisation, mean/std applied in the wrong channel order), rendered on
real image files.

Rendering is split in two stages so a search over many recipes stays cheap: decoding
and geometry (resize, crop) give 8-bit pixels, cached per geometric key; the values
stage (scale, mean/std or standardisation, channel order) is one vectorised step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from parity.preprocess import _PIL_FILTERS as PIL_FILTERS
from parity.preprocess import PreprocessSpec, load_image, resized_size, to_tensor
from parity.preprocess import _sample_no_antialias as sample_no_antialias

Values = Literal["spec", "standardise", "standardise-per-channel"]
#: How a letterbox sizes and places the resized image: ``"round"`` (``round(side * s)``,
#: offset ``(target - side) // 2``), ``"int"`` (``int(side * s)``, same offset) or ``"tf"``
#: (``tf.image.resize_with_pad``: floored size, offset floored from the unrounded size).
Letterbox = Literal["round", "int", "tf"]


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that turns an image file into a tensor, as a user's pipeline does it.

    Attributes:
        spec: the parity spec (decode, resize, crop, scale, mean/std, channel order).
        crop_offset: ``"round"`` (torchvision's ``CenterCrop``) or ``"floor"``
            (``tf.image.resize_with_crop_or_pad``, ``(w - crop) // 2``).
        size_rounding: resized size from the aspect ratio by ``"int"`` (torchvision) or
            ``"round"``.
        sixteen_bit: 16-bit images ``"scale"``-d to 8 bits, or ``"clip"``-ped
            (``Image.convert("RGB")``).
        values: ``"spec"`` (scale, mean, std) or per-image standardisation over the whole
            image (``tf.image.per_image_standardization``) or per channel.
        stats_swapped: mean/std applied to the channels in reversed order (e.g. RGB
            constants on BGR channels).
        letterbox: ``None``, or the image resized keeping its aspect ratio to fit the
            output size and padded (:data:`Letterbox` says how); replaces resize and crop.
        pad: the letterbox's fill, 8-bit RGB.
        pixel_rounding: resized pixels ``"round"``-ed to 8 bits (PIL, torchvision on
            uint8), ``"floor"``-ed (a float resize cast with ``astype(uint8)``) or left
            unrounded (``"none"``: ``tf.image.resize`` on floats); ``"cv2"``: bilinear
            without antialias in ``cv2.resize``'s fixed-point arithmetic (INTER_LINEAR).
        transpose_hw: the tensor's H and W axes swapped (``permute(2, 1, 0)`` of HWC).
    """

    spec: PreprocessSpec
    crop_offset: Literal["round", "floor"] = "round"
    size_rounding: Literal["int", "round"] = "int"
    sixteen_bit: Literal["scale", "clip"] = "scale"
    values: Values = "spec"
    stats_swapped: bool = False
    letterbox: Letterbox | None = None
    pad: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pixel_rounding: Literal["round", "floor", "none", "cv2"] = "round"
    transpose_hw: bool = False

    def replace(self, **changes: object) -> Recipe:
        """A copy with recipe fields or spec fields changed."""
        spec_fields = {f.name for f in dataclasses.fields(PreprocessSpec)}
        spec_changes = {k: v for k, v in changes.items() if k in spec_fields}
        own = {k: v for k, v in changes.items() if k not in spec_fields}
        spec = self.spec.replace(**spec_changes) if spec_changes else self.spec
        return dataclasses.replace(self, spec=spec, **own)  # type: ignore[arg-type]

    def geometry_key(self) -> tuple[object, ...]:
        """What the geometric stage depends on."""
        s = self.spec
        return (
            s.exif_transpose,
            s.alpha,
            s.resize,
            s.resize_filter,
            s.antialias,
            s.crop,
            s.crop_first,
            self.crop_offset,
            self.size_rounding,
            self.sixteen_bit,
            self.letterbox,
            self.pad,
            self.pixel_rounding,
        )

    def level(self) -> float:
        """One 8-bit step in tensor units (the largest over channels)."""
        if self.values != "spec":
            return 0.0  # depends on the image; see :func:`half_level_tolerance`
        return float(max(abs(self.spec.scale / s) for s in self.spec.std))


def _decode(path: Path, recipe: Recipe) -> Image.Image:
    image = load_image(path, recipe.spec)
    if recipe.sixteen_bit == "clip":
        with Image.open(path) as raw:
            if raw.mode.startswith("I"):
                clipped = raw.convert("RGB")  # PIL clips 16-bit values above 255
                image = ImageOps.exif_transpose(clipped) if recipe.spec.exif_transpose else clipped
    return image


def _floor_crop(pixels: np.ndarray, crop: tuple[int, int]) -> np.ndarray:
    """Centre crop (zero-padding a smaller image) with floored offsets, as TF does."""
    crop_h, crop_w = crop
    height, width = pixels.shape[:2]
    if height < crop_h or width < crop_w:
        padded = np.zeros((max(height, crop_h), max(width, crop_w), 3), pixels.dtype)
        top, left = (padded.shape[0] - height) // 2, (padded.shape[1] - width) // 2
        padded[top : top + height, left : left + width] = pixels
        pixels, height, width = padded, padded.shape[0], padded.shape[1]
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return pixels[top : top + crop_h, left : left + crop_w]


def _resized(image: Image.Image, size: tuple[int, int], recipe: Recipe) -> np.ndarray:
    """``image`` resized to ``size`` (width, height) by the recipe's filter, rounded as
    ``recipe.pixel_rounding`` says (PIL's own 8-bit arithmetic when rounded)."""
    spec = recipe.spec
    if recipe.pixel_rounding == "cv2":
        return _cv2_linear(np.asarray(image), size).astype(np.float32)
    if not spec.antialias and spec.resize_filter in ("nearest", "bilinear"):
        array = np.asarray(image, dtype=np.float32)
        pixels = sample_no_antialias(array, size[1], size[0], spec.resize_filter)
    elif recipe.pixel_rounding == "round":
        return np.asarray(image.resize(size, PIL_FILTERS[spec.resize_filter]), np.float32)
    else:
        method = PIL_FILTERS[spec.resize_filter]
        bands = [np.asarray(band.convert("F").resize(size, method)) for band in image.split()]
        pixels = np.stack(bands, axis=-1)
    if recipe.pixel_rounding == "floor":
        pixels = np.floor(pixels)
    elif recipe.pixel_rounding == "round":
        pixels = np.round(pixels)
    return np.clip(pixels, 0, 255).astype(np.float32)


def _cv2_taps(n_in: int, n_out: int) -> tuple[np.ndarray, ...]:
    """Source indices and 11-bit weights of ``cv2.resize`` INTER_LINEAR along one axis."""
    centre = ((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5).astype(np.float32)
    low = np.floor(centre).astype(np.int64)
    frac = (centre - low).astype(np.float64)
    frac[low < 0], low[low < 0] = 0.0, 0
    frac[low >= n_in - 1], low[low >= n_in - 1] = 0.0, n_in - 1
    high_weight = np.round(frac * 2048).astype(np.int64)
    return low, np.minimum(low + 1, n_in - 1), 2048 - high_weight, high_weight


def _cv2_linear(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 HWC resized to ``size`` (width, height) as OpenCV's INTER_LINEAR computes it:
    a horizontal pass with 11-bit weights, then the vertical pass's fixed-point rounding."""
    src = pixels.astype(np.int64)
    x0, x1, a0, a1 = _cv2_taps(src.shape[1], size[0])
    y0, y1, b0, b1 = _cv2_taps(src.shape[0], size[1])
    rows = src[:, x0] * a0[None, :, None] + src[:, x1] * a1[None, :, None]
    top = (b0[:, None, None] * (rows[y0] >> 4)) >> 16
    bottom = (b1[:, None, None] * (rows[y1] >> 4)) >> 16
    return np.clip((top + bottom + 2) >> 2, 0, 255)


def _letterbox(image: Image.Image, recipe: Recipe) -> np.ndarray:
    """The image fitted into the output size keeping its aspect ratio, padded."""
    height, width = recipe.spec.input_hw
    scale = min(height / image.height, width / image.width)
    exact = (image.width * scale, image.height * scale)
    if recipe.letterbox == "tf":  # float32: ratio = max(w / W, h / H), size w / ratio
        f32 = np.float32
        ratio = max(f32(image.width) / f32(width), f32(image.height) / f32(height))
        exact = (float(f32(image.width) / ratio), float(f32(image.height) / ratio))
    if recipe.letterbox == "round":
        size = (max(1, round(exact[0])), max(1, round(exact[1])))
    else:
        size = (max(1, int(exact[0])), max(1, int(exact[1])))
    pixels = _resized(image, size, recipe)
    if recipe.letterbox == "tf":
        top, left = int((height - exact[1]) // 2), int((width - exact[0]) // 2)
    else:
        top, left = (height - size[1]) // 2, (width - size[0]) // 2
    canvas = np.empty((height, width, 3), np.float32)
    canvas[:] = np.asarray(recipe.pad, np.float32)
    canvas[top : top + size[1], left : left + size[0]] = pixels
    return canvas


def _unrounded(image: Image.Image, recipe: Recipe) -> np.ndarray:
    """Resize then centre crop, the resized pixels floored or left unrounded."""
    spec = recipe.spec
    assert spec.resize is not None
    size = resized_size(image.width, image.height, spec.resize)
    pixels = _resized(image, size, recipe)
    if spec.crop is None:
        return pixels
    if recipe.crop_offset == "floor":
        return _floor_crop(pixels, spec.crop)
    top = int(round((size[1] - spec.crop[0]) / 2.0))
    left = int(round((size[0] - spec.crop[1]) / 2.0))
    return pixels[top : top + spec.crop[0], left : left + spec.crop[1]]


def _pixels(image: Image.Image, recipe: Recipe) -> np.ndarray:
    """Resized and cropped 8-bit pixels of a decoded image, as float32 HWC RGB."""
    if recipe.letterbox is not None:
        return _letterbox(image, recipe)
    spec = recipe.spec.replace(
        scale=1.0,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        channel_order="RGB",
        layout="NHWC",
        dtype="float32",
    )
    if spec.resize is not None and len(spec.resize) == 1 and recipe.size_rounding == "round":
        short = spec.resize[0]
        ratio = short / min(image.size)
        width, height = (
            (short, round(image.height * ratio))
            if image.width <= image.height
            else (round(image.width * ratio), short)
        )
        spec = spec.replace(resize=(height, width))
    if recipe.pixel_rounding != "round" and spec.resize is not None and not spec.crop_first:
        return _unrounded(image, dataclasses.replace(recipe, spec=spec))
    if recipe.crop_offset == "floor" and spec.crop is not None and not spec.crop_first:
        return _floor_crop(to_tensor(image, spec.replace(crop=None)), spec.crop)
    return to_tensor(image, spec)


class Renderer:
    """Renders recipes on a fixed list of images, caching the geometric stage."""

    #: geometric results kept (each is N x H x W x 3 float32)
    CACHED = 24

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self._geometry: dict[tuple[object, ...], np.ndarray] = {}
        self._decoded: dict[tuple[object, ...], list[Image.Image]] = {}

    def pixels(self, recipe: Recipe) -> np.ndarray:
        """(N, H, W, 3) float32 8-bit pixel values after decoding, resize and crop."""
        key = recipe.geometry_key()
        if key not in self._geometry:
            decode_key = (recipe.spec.exif_transpose, recipe.spec.alpha, recipe.sixteen_bit)
            if decode_key not in self._decoded:
                self._decoded[decode_key] = [_decode(p, recipe) for p in self.paths]
            images = self._decoded[decode_key]
            if len(self._geometry) >= self.CACHED:
                del self._geometry[next(iter(self._geometry))]  # the oldest
            self._geometry[key] = np.stack([_pixels(image, recipe) for image in images])
        return self._geometry[key]

    def render(self, recipe: Recipe) -> np.ndarray:
        """The recipe's batch, NCHW float32 (the doctor compares in NCHW)."""
        nchw = values(self.pixels(recipe), recipe).transpose(0, 3, 1, 2)
        return nchw.transpose(0, 1, 3, 2) if recipe.transpose_hw else nchw


def values(pixels: np.ndarray, recipe: Recipe) -> np.ndarray:
    """The values stage on (N, H, W, 3) RGB pixels: normalisation, then channel order."""
    spec = recipe.spec
    ordered = pixels[..., ::-1] if spec.channel_order == "BGR" else pixels
    if recipe.values == "spec":
        mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
        # the constants belong to RGB; on BGR channels they are correct reversed
        if (spec.channel_order == "BGR") != recipe.stats_swapped:
            mean, std = mean[::-1], std[::-1]
        return (ordered * np.float32(spec.scale) - mean) / std
    axes = (1, 2, 3) if recipe.values == "standardise" else (1, 2)
    centred = ordered - ordered.mean(axis=axes, keepdims=True)
    count = np.prod([ordered.shape[a] for a in axes])
    std = np.maximum(ordered.std(axis=axes, keepdims=True), 1.0 / np.sqrt(count))
    return (centred / std).astype(np.float32)


def half_level_tolerance(recipe: Recipe, pixels: np.ndarray) -> float:
    """Half an 8-bit step in tensor units (plus float noise): a pipeline that skips the
    rounding of resized pixels to 8 bits (``tf.image.resize`` returns floats) still
    counts as reproduced."""
    level = recipe.level()
    if level == 0.0:
        axes = (1, 2, 3) if recipe.values == "standardise" else (1, 2)
        std = pixels.std(axis=axes)
        level = float(1.0 / max(float(std.min()), 1e-3))
    return 0.5 * level * 1.01 + 1e-4


__all__ = ["Recipe", "Renderer", "half_level_tolerance", "values"]
