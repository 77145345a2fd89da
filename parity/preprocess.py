"""One fixed, hashed preprocessing, implemented once in numpy/PIL.

Every runtime is fed the bytes this module produces: the canonical tensor is float32
NCHW; an NHWC runtime gets ``np.transpose`` of it and nothing else. The spec is data: it
serialises to canonical JSON whose sha256 is recorded wherever its outputs are used, so
a golden made with one preprocessing can never be silently compared with another.

The default spec reproduces torchvision's ``weights.transforms()`` for ImageNet
classifiers (shorter side to 256 with PIL bilinear, which antialiases; centre crop 224;
scale to [0, 1]; ImageNet mean/std; RGB; NCHW float32).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from parity.errors import FixtureError

Layout = Literal["NCHW", "NHWC"]
ResizeFilter = Literal["nearest", "bilinear", "bicubic", "lanczos", "area"]

#: Images with more pixels are refused before decoding (a decompression-bomb guard:
#: a few hundred bytes of PNG can declare gigapixels). 8192 x 8192.
MAX_IMAGE_PIXELS = 8192 * 8192
#: A resize whose full output would be larger is done only inside the centre-crop window
#: (memory stays bounded for a 1 x 12000 strip). Ordinary images (aspect ratio up to
#: about 1:250 at 256) never reach it, so their bytes are those of the full resize.
MAX_RESIZED_PIXELS = 4096 * 4096

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "area": Image.Resampling.BOX,
}


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    """Everything that turns an image file into an input tensor.

    Attributes:
        exif_transpose: apply the EXIF orientation tag before anything else.
        alpha: ``"drop"`` keeps the colour under transparent pixels (what
            ``Image.convert("RGB")`` and torchvision's loader do); ``"white"`` / ``"black"``
            composite onto that background.
        resize: target of the resize; one int resizes the shorter side to it keeping
            the aspect ratio (torchvision ``Resize(int)``), two ints are (height, width);
            ``None`` skips the resize.
        resize_filter: interpolation filter.
        antialias: low-pass filter when downscaling (PIL always does; ``False`` samples the
            source at the output pixel centres, as ``tf.image.resize`` does by default).
        crop: centre crop (height, width); ``None`` skips it. Smaller images are
            zero-padded, as torchvision's ``CenterCrop`` does.
        crop_first: crop before resizing instead of after.
        scale: multiplier applied to the 8-bit values (1/255 maps to [0, 1]).
        mean, std: per-channel normalisation applied after scaling, in RGB order.
        channel_order: ``"RGB"`` or ``"BGR"`` (applied after normalisation).
        layout: ``"NCHW"`` or ``"NHWC"`` for :meth:`Preprocessor.batch`.
        dtype: numpy dtype name of the tensor.
    """

    exif_transpose: bool = True
    alpha: Literal["drop", "white", "black"] = "drop"
    resize: tuple[int, ...] | None = (256,)
    resize_filter: ResizeFilter = "bilinear"
    antialias: bool = True
    crop: tuple[int, int] | None = (224, 224)
    crop_first: bool = False
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channel_order: Literal["RGB", "BGR"] = "RGB"
    layout: Layout = "NCHW"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.resize is not None and len(self.resize) not in (1, 2):
            raise ValueError(f"resize must be one int or (height, width), got {self.resize}")
        if self.resize_filter not in _PIL_FILTERS:
            raise ValueError(f"unknown resize_filter {self.resize_filter!r}")
        if not self.antialias and self.resize_filter not in ("nearest", "bilinear"):
            raise ValueError("antialias=False is implemented for nearest and bilinear only")
        if self.layout not in ("NCHW", "NHWC"):
            raise ValueError(f"layout must be NCHW or NHWC, got {self.layout!r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessSpec:
        """Build a spec from its JSON/TOML form; unknown keys are an error."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise ValueError(f"unknown preprocessing keys {unknown}; known: {sorted(fields)}")
        kwargs = dict(data)
        for key in ("resize", "crop", "mean", "std"):
            if key in kwargs and kwargs[key] is not None:
                value = kwargs[key]
                kwargs[key] = tuple(value) if isinstance(value, list | tuple) else (value,)
        if "crop" in kwargs and kwargs["crop"] is not None and len(kwargs["crop"]) == 1:
            kwargs["crop"] = (kwargs["crop"][0], kwargs["crop"][0])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (lists for tuples)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace, floats as Python repr."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def sha256(self) -> str:
        """Hash of the canonical JSON; recorded in reports, caches and goldens."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()

    @property
    def input_hw(self) -> tuple[int, int]:
        """Spatial size of the produced tensor."""
        if self.crop is not None and self.crop_first and self.resize is not None:
            # Cropped, then resized: the resize decides the output size.
            width, height = resized_size(self.crop[1], self.crop[0], self.resize)
            return (height, width)
        if self.crop is not None:
            return self.crop
        if self.resize is not None and len(self.resize) == 2:
            return (self.resize[0], self.resize[1])
        raise ValueError("spec has no fixed output size (set crop or a (h, w) resize)")

    def replace(self, **changes: Any) -> PreprocessSpec:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


def tensor_sha256(array: np.ndarray) -> str:
    """Hash of a tensor's dtype, shape and bytes (C order)."""
    digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def load_image(path: Path, spec: PreprocessSpec = PreprocessSpec()) -> Image.Image:
    """Decode ``path`` to an 8-bit RGB PIL image, with clear errors for bad files.

    Handles EXIF orientation, grayscale, palette, RGBA/LA (by ``spec.alpha``), CMYK and
    16-bit grayscale (scaled to 8 bits, not clipped as ``convert("RGB")`` would).
    """
    path = Path(path)
    if not path.is_file():
        raise FixtureError(f"{path}: no such image file")
    try:
        with Image.open(path) as opened:
            pixels = opened.width * opened.height
            if pixels > MAX_IMAGE_PIXELS:
                raise FixtureError(
                    f"{path}: {opened.width}x{opened.height} = {pixels:,} pixels, over the "
                    f"limit of {MAX_IMAGE_PIXELS:,} (8192x8192; a decompression bomb?)"
                )
            opened.load()
            image = opened.copy()
            image.info = dict(opened.info)
    except UnidentifiedImageError:
        raise FixtureError(f"{path}: not an image file PIL can decode") from None
    except Image.DecompressionBombError as exc:
        raise FixtureError(f"{path}: refused as a decompression bomb ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise FixtureError(f"{path}: corrupt or truncated image ({exc})") from None
    if spec.exif_transpose:
        image = ImageOps.exif_transpose(image)
    return _to_rgb8(image, spec.alpha)


def _to_rgb8(image: Image.Image, alpha: str) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        wide = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") or wide.max() > 255 else 255.0
        image = Image.fromarray(np.round(wide * (255.0 / peak)).astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA") and alpha != "drop":
        background = Image.new("RGBA", image.size, "white" if alpha == "white" else "black")
        image = Image.alpha_composite(background, image.convert("RGBA"))
    return image.convert("RGB") if image.mode != "RGB" else image


def resized_size(width: int, height: int, resize: tuple[int, ...]) -> tuple[int, int]:
    """Output (width, height) of a resize, with torchvision's rounding."""
    if len(resize) == 2:
        return resize[1], resize[0]
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = resize[0], int(resize[0] * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def _resize(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    assert spec.resize is not None
    size = resized_size(image.width, image.height, spec.resize)
    if size == image.size:
        return image
    if spec.antialias or spec.resize_filter not in ("nearest", "bilinear"):
        return image.resize(size, _PIL_FILTERS[spec.resize_filter])
    array = np.asarray(image, dtype=np.float32)
    out = _sample_no_antialias(array, size[1], size[0], spec.resize_filter)
    return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8))


def _resize_window(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """The part of a resize that the centre crop keeps, computed alone (bounded memory).

    With antialias off the window is sliced from the same per-axis weights (identical
    values); with PIL's filters it is a box resize, which can differ by 1 in a few pixels
    from the full resize: used only above :data:`MAX_RESIZED_PIXELS`.
    """
    assert spec.resize is not None and spec.crop is not None
    width, height = resized_size(image.width, image.height, spec.resize)
    crop_h, crop_w = spec.crop
    left = int(round((width - crop_w) / 2.0)) if width > crop_w else 0
    top = int(round((height - crop_h) / 2.0)) if height > crop_h else 0
    right, bottom = min(left + crop_w, width), min(top + crop_h, height)
    if not spec.antialias and spec.resize_filter in ("nearest", "bilinear"):
        array = np.asarray(image, dtype=np.float32)
        window = (slice(top, bottom), slice(left, right))
        out = _sample_no_antialias(array, height, width, spec.resize_filter, window)
        return Image.fromarray(np.clip(np.round(out), 0, 255).astype(np.uint8))
    sx, sy = image.width / width, image.height / height
    box = (left * sx, top * sy, right * sx, bottom * sy)
    return image.resize((right - left, bottom - top), _PIL_FILTERS[spec.resize_filter], box=box)


def _sample_no_antialias(
    array: np.ndarray,
    out_h: int,
    out_w: int,
    mode: str,
    window: tuple[slice, slice] = (slice(None), slice(None)),
) -> np.ndarray:
    """Half-pixel-centre resampling without a low-pass filter (``tf.image.resize``);
    ``window`` selects the output rows and columns to compute."""

    def axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        centres = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
        if mode == "nearest":
            idx = np.clip(np.floor(centres + 0.5), 0, n_in - 1).astype(int)
            return idx, idx, np.zeros(n_out, dtype=np.float32)
        centres = np.clip(centres, 0, n_in - 1)
        low = np.floor(centres).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        return low, high, (centres - low).astype(np.float32)

    y0, y1, wy = (w[window[0]] for w in axis_weights(array.shape[0], out_h))
    x0, x1, wx = (w[window[1]] for w in axis_weights(array.shape[1], out_w))
    rows = array[y0] * (1 - wy)[:, None, None] + array[y1] * wy[:, None, None]
    return rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]


def _center_crop(image: Image.Image, crop: tuple[int, int]) -> Image.Image:
    crop_h, crop_w = crop
    if image.width < crop_w or image.height < crop_h:
        padded = Image.new("RGB", (max(crop_w, image.width), max(crop_h, image.height)))
        padded.paste(
            image, ((padded.width - image.width) // 2, (padded.height - image.height) // 2)
        )
        image = padded
    top = int(round((image.height - crop_h) / 2.0))
    left = int(round((image.width - crop_w) / 2.0))
    return image.crop((left, top, left + crop_w, top + crop_h))


def to_tensor(image: Image.Image, spec: PreprocessSpec) -> np.ndarray:
    """Geometric steps, then scale/normalise: one image as CHW (or HWC) ``spec.dtype``."""
    if spec.crop_first and spec.crop is not None:
        image = _center_crop(image, spec.crop)
    if spec.resize is not None:
        width, height = resized_size(image.width, image.height, spec.resize)
        windowed = spec.crop is not None and not spec.crop_first
        if width * height > MAX_RESIZED_PIXELS and windowed:
            image = _resize_window(image, spec)
        elif width * height > MAX_RESIZED_PIXELS:
            raise FixtureError(
                f"{image.width}x{image.height} image resizes to {width}x{height}, over the "
                f"limit of {MAX_RESIZED_PIXELS:,} pixels with no crop after the resize"
            )
        else:
            image = _resize(image, spec)
    if not spec.crop_first and spec.crop is not None:
        image = _center_crop(image, spec.crop)
    pixels = np.asarray(image, dtype=np.float32)
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    hwc = (pixels * np.float32(spec.scale) - mean) / std
    if spec.channel_order == "BGR":
        hwc = hwc[..., ::-1]
    chw = np.ascontiguousarray(hwc.transpose(2, 0, 1) if spec.layout == "NCHW" else hwc)
    return chw.astype(spec.dtype, copy=False)


def preprocess(path: Path, spec: PreprocessSpec = PreprocessSpec()) -> np.ndarray:
    """One image file to one tensor (no batch axis), by the spec."""
    image = load_image(path, spec)
    try:
        return to_tensor(image, spec)
    except FixtureError as exc:
        raise FixtureError(f"{path}: {exc}") from None


def preprocess_batch(paths: Sequence[Path], spec: PreprocessSpec = PreprocessSpec()) -> np.ndarray:
    """Image files to one batch in ``spec.layout``."""
    if not paths:
        raise FixtureError("no images to preprocess")
    return np.stack([preprocess(p, spec) for p in paths])


def to_layout(batch: np.ndarray, source: Layout, target: Layout) -> np.ndarray:
    """Move a 4-D batch between NCHW and NHWC; other ranks pass through unchanged."""
    if source == target or batch.ndim != 4:
        return batch
    axes = (0, 2, 3, 1) if source == "NCHW" else (0, 3, 1, 2)
    return np.ascontiguousarray(batch.transpose(axes))


def describe(spec: PreprocessSpec) -> str:
    """One human line, e.g. for a report header."""
    resize = "none" if spec.resize is None else "x".join(map(str, spec.resize))
    crop = "none" if spec.crop is None else "x".join(map(str, spec.crop))
    aa = "aa" if spec.antialias else "no-aa"
    norm = "mean/std" if not math.isclose(spec.std[0], 1.0) else "none"
    return (
        f"resize {resize} {spec.resize_filter} {aa}, crop {crop}, scale {spec.scale:.6g}, "
        f"norm {norm}, {spec.channel_order}, {spec.layout} {spec.dtype}"
    )
