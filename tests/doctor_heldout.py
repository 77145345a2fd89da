"""Held-out user pipelines for ``parity doctor``, kept apart from the search's own corpus.

Written after the search (tests/doctor_corpus.py), in styles that corpus does not use:
torchvision v2 on uint8 tensors from ``decode_image``, PIL + numpy with its own letterbox
and rounding, a cv2-like loader written in numpy (BGR, fixed-point bilinear without
antialias), tf.image / tf.data, a numpy ``preprocess_input``-style function, the user's
own model objects (autocast, bf16 weights, channels_last) and TFLite calibration
generators. The card is mobilenet_v2's (torchvision ImageNet: shorter side 256 bilinear
with antialias, centre crop 224, /255, ImageNet mean/std, RGB, NCHW). Each case names the
factors the doctor must report (substrings, one per factor; empty: clean).

Used by tests/test_doctor_heldout.py and bench/doctor_corpus.py (``--heldout``); never by
the search's own tuning.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from doctor_corpus import MEAN, PHOTOS, STD
from PIL import Image, ImageOps

#: "preprocessing" (pipeline), "model" (a --model-object builder), "calibration" (a
#: representative_dataset generator).
KINDS = ("preprocessing", "model", "calibration")


@dataclasses.dataclass(frozen=True)
class HeldOut:
    """One held-out case: the check it exercises, the user's object, what must be named."""

    name: str
    kind: str
    style: str
    obj: Any
    expected: tuple[str, ...]
    images: tuple[Path, ...] = PHOTOS


# --------------------------------------------------------------------- torchvision v2


def tv2_uint8(resize: int = 256) -> Callable[[Path], Any]:
    """decode_image -> uint8 tensor -> v2 transforms (the torchvision >= 0.16 style)."""
    import torch
    from torchvision.io import ImageReadMode, decode_image
    from torchvision.transforms import v2

    transform = v2.Compose(
        [
            v2.Resize(resize, antialias=True),
            v2.CenterCrop(224),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=MEAN.tolist(), std=STD.tolist()),
        ]
    )

    def prep(path: Path) -> Any:
        return transform(decode_image(str(path), mode=ImageReadMode.RGB))

    return prep


def tv2_hw_swapped(path: Path) -> Any:
    """numpy HWC -> torch with permute(2, 1, 0): channels first, but H and W swapped."""
    import torch

    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    w, h = image.size
    size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = int(round((image.width - 224) / 2)), int(round((image.height - 224) / 2))
    pixels = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32)
    x = torch.from_numpy(pixels).permute(2, 1, 0) / 255.0
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


# --------------------------------------------------------------------- PIL + numpy


def _pil_rgb(path: Path) -> Image.Image:
    return ImageOps.exif_transpose(Image.open(path)).convert("RGB")


def _pil_resize_crop(image: Image.Image) -> Image.Image:
    w, h = image.size
    size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    image = image.resize(size, Image.Resampling.BILINEAR)
    left, top = int(round((image.width - 224) / 2)), int(round((image.height - 224) / 2))
    return image.crop((left, top, left + 224, top + 224))


def pil_letterbox(path: Path) -> np.ndarray:
    """Keep the aspect ratio: longer side to 224, pad the rest with black (YOLO habit)."""
    image = _pil_rgb(path)
    scale = 224 / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (224, 224))
    canvas.paste(image, ((224 - size[0]) // 2, (224 - size[1]) // 2))
    pixels = np.asarray(canvas, dtype=np.float32) / 255.0
    return ((pixels - MEAN) / STD).transpose(2, 0, 1)


def pil_float_truncated(path: Path) -> np.ndarray:
    """Resize in PIL's float mode per channel, then ``astype(uint8)``: truncates (floors)."""
    image = _pil_rgb(path)
    w, h = image.size
    size = (256, int(256 * h / w)) if w <= h else (int(256 * w / h), 256)
    channels = [
        np.asarray(c.convert("F").resize(size, Image.Resampling.BILINEAR)) for c in image.split()
    ]
    pixels = np.clip(np.stack(channels, axis=-1), 0, 255).astype(np.uint8)
    top, left = int(round((size[1] - 224) / 2)), int(round((size[0] - 224) / 2))
    crop = pixels[top : top + 224, left : left + 224].astype(np.float32) / 255.0
    return ((crop - MEAN) / STD).transpose(2, 0, 1)


def numpy_units_mixed(path: Path) -> np.ndarray:
    """ImageNet mean/std written in 0-255 units, applied to pixels already in 0-1."""
    pixels = np.asarray(_pil_resize_crop(_pil_rgb(path)), dtype=np.float32) / 255.0
    mean, std = MEAN * 255.0, STD * 255.0
    return ((pixels - mean) / std).transpose(2, 0, 1)


def numpy_preprocess_input(x: Any) -> np.ndarray:
    """A Keras-style ``preprocess_input`` in numpy (works on PIL images too: the trap)."""
    x = np.asarray(x, dtype=np.float32)
    x = x / 127.5
    return x - 1.0


# --------------------------------------------------------------------- cv2-like numpy


def _cv2_axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR taps and 11-bit fixed-point weights along one axis."""
    f = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    i = np.floor(f).astype(np.int64)
    f = f - i
    f = np.where(i < 0, 0.0, f)
    i = np.maximum(i, 0)
    last = i >= n_in - 1
    f = np.where(last, 0.0, f)
    i = np.minimum(i, n_in - 1)
    w1 = np.round(f * 2048).astype(np.int64)
    return i, np.minimum(i + 1, n_in - 1), 2048 - w1, w1


def cv2_like_resize(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.resize(img, (width, height))`` on uint8 HWC, as OpenCV computes it."""
    src = pixels.astype(np.int64)
    x0, x1, a0, a1 = _cv2_axis(src.shape[1], width)
    y0, y1, b0, b1 = _cv2_axis(src.shape[0], height)
    rows = src[:, x0] * a0[None, :, None] + src[:, x1] * a1[None, :, None]
    r0, r1 = rows[y0] >> 4, rows[y1] >> 4
    out = ((b0[:, None, None] * r0) >> 16) + ((b1[:, None, None] * r1) >> 16) + 2
    return np.clip(out >> 2, 0, 255).astype(np.uint8)


def cv2_like(path: Path) -> np.ndarray:
    """imread (BGR) -> resize shorter side to 256 -> centre crop -> BGR mean/std."""
    bgr = np.asarray(_pil_rgb(path))[..., ::-1]
    h, w = bgr.shape[:2]
    new_w, new_h = (256, int(h * 256 / w)) if w <= h else (int(w * 256 / h), 256)
    resized = cv2_like_resize(bgr, new_w, new_h)
    top, left = int(round((new_h - 224) / 2)), int(round((new_w - 224) / 2))
    crop = resized[top : top + 224, left : left + 224].astype(np.float32) / 255.0
    return ((crop - MEAN[::-1]) / STD[::-1]).transpose(2, 0, 1)


# --------------------------------------------------------------------- TensorFlow


def tf_pipelines() -> dict[str, Callable[..., Any]]:
    """tf.image and tf.data pipelines (imports TensorFlow: after torch, via parity.lazy)."""
    from parity import lazy

    tf = lazy.tensorflow()
    mean, std = tf.constant(MEAN), tf.constant(STD)

    def decode(path: Any) -> Any:
        return tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)

    def tf_antialias_clean(path: Path) -> Any:
        """tf.image.resize(antialias=True) of the shorter side, torchvision's crop offsets."""
        image = tf.cast(decode(str(path)), tf.float32)
        h, w = int(image.shape[0]), int(image.shape[1])
        size = (256, int(256 * w / h)) if h <= w else (int(256 * h / w), 256)
        image = tf.image.resize(image, size, antialias=True)
        top, left = int(round((size[0] - 224) / 2)), int(round((size[1] - 224) / 2))
        image = image[top : top + 224, left : left + 224]
        return tf.transpose((image / 255.0 - mean) / std, (2, 0, 1))

    def tf_squash_central_crop(path: Path) -> Any:
        """Squash to 256x256, then tf.image.central_crop(0.875): no aspect ratio kept."""
        image = tf.cast(decode(str(path)), tf.float32)
        image = tf.image.resize(image, (256, 256), antialias=True)
        image = tf.image.central_crop(image, 0.875)
        return tf.transpose((image / 255.0 - mean) / std, (2, 0, 1))

    def tf_data_resize_with_pad(path: Any) -> Any:
        """A tf.data map function: resize_with_pad (letterbox), [-1, 1] values, NHWC."""
        image = tf.cast(decode(path), tf.float32)
        image = tf.image.resize_with_pad(image, 224, 224, antialias=True)
        return image / 127.5 - 1.0

    return {
        "tf-image-antialias": tf_antialias_clean,
        "tf-squash-central-crop": tf_squash_central_crop,
        "tf-data-resize-with-pad": tf_data_resize_with_pad,
    }


# --------------------------------------------------------------------- model objects


def _mobilenet() -> Any:
    """The card's architecture with the card's weights, as a user rebuilds it."""
    from parity.harness import RunConfig
    from parity.local import LocalSession

    return LocalSession(RunConfig(model="mobilenet_v2")).model().module


def model_autocast_bf16() -> Any:
    """A deployment wrapper whose forward runs under CPU autocast (bf16)."""
    import torch

    class Served(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Any) -> Any:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.inner(x).float()

    return Served(_mobilenet()).eval()


def model_bf16_weights() -> Any:
    """Weights cast to bfloat16 to halve memory; the input cast in a wrapper."""
    import torch

    class Half(torch.nn.Module):
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner.to(torch.bfloat16)

        def forward(self, x: Any) -> Any:
            return self.inner(x.to(torch.bfloat16)).float()

    return Half(_mobilenet()).eval()


def model_channels_last() -> Any:
    """fp32, eval, channels_last memory format: a speed setting, not a precision one."""
    import torch

    return _mobilenet().to(memory_format=torch.channels_last).eval()


# --------------------------------------------------------------------- calibration


def _calibration_pixels() -> list[np.ndarray]:
    return [np.asarray(_pil_resize_crop(_pil_rgb(p)), dtype=np.float32) for p in PHOTOS[:4]]


def representative_raw_pixels() -> Any:
    """TFLite convention (NHWC lists), but raw 0-255 pixels: normalisation forgotten."""
    for pixels in _calibration_pixels():
        yield [pixels[None]]


def representative_clean() -> Any:
    """NHWC, normalised as the card does it, one image per step."""
    for pixels in _calibration_pixels():
        yield [((pixels / 255.0 - MEAN) / STD)[None].astype(np.float32)]


# --------------------------------------------------------------------- the set


def heldout_cases(with_tf: bool = True) -> list[HeldOut]:
    """12 faulty and 5 clean cases (TF ones only when ``with_tf``)."""
    cases = [
        HeldOut("tv2-decode-image-uint8", "preprocessing", "torchvision v2", tv2_uint8(), ()),
        HeldOut(
            "tv2-resize-232-crop-224",
            "preprocessing",
            "torchvision v2",
            tv2_uint8(232),
            ("resized to 232",),
        ),
        HeldOut(
            "tv2-permute-hw-swapped",
            "preprocessing",
            "torch tensor",
            tv2_hw_swapped,
            ("H and W swapped",),
        ),
        HeldOut("pil-letterbox", "preprocessing", "PIL + numpy", pil_letterbox, ("letterbox",)),
        HeldOut(
            "pil-float-truncated",
            "preprocessing",
            "PIL + numpy",
            pil_float_truncated,
            ("truncated",),
        ),
        HeldOut(
            "numpy-mean-std-255-on-0-1",
            "preprocessing",
            "numpy",
            numpy_units_mixed,
            ("0-255 units",),
        ),
        HeldOut(
            "numpy-preprocess-input",
            "preprocessing",
            "Keras preprocess_input (numpy)",
            numpy_preprocess_input,
            ("normalisation 'tf'", "layout NHWC"),
        ),
        HeldOut(
            "cv2-like-numpy",
            "preprocessing",
            "cv2-like loader in numpy",
            cv2_like,
            ("channel order BGR", "antialias off"),
        ),
        HeldOut(
            "model-autocast-bf16",
            "model",
            "own model object",
            model_autocast_bf16,
            ("autocast bfloat16",),
        ),
        HeldOut(
            "model-bf16-weights",
            "model",
            "own model object",
            model_bf16_weights,
            ("bfloat16 weights",),
        ),
        HeldOut("model-channels-last", "model", "own model object", model_channels_last, ()),
        HeldOut(
            "calibration-raw-pixels",
            "calibration",
            "calibration generator",
            representative_raw_pixels,
            ("outside the range",),
        ),
        HeldOut(
            "calibration-clean", "calibration", "calibration generator", representative_clean, ()
        ),
    ]
    if with_tf:
        tf = tf_pipelines()
        cases += [
            HeldOut(
                "tf-image-antialias", "preprocessing", "tf.image", tf["tf-image-antialias"], ()
            ),
            HeldOut(
                "tf-squash-central-crop",
                "preprocessing",
                "tf.image",
                tf["tf-squash-central-crop"],
                ("aspect ratio not kept",),
            ),
            HeldOut(
                "tf-data-resize-with-pad",
                "preprocessing",
                "tf.data",
                tf["tf-data-resize-with-pad"],
                ("letterbox", "normalisation 'tf'", "layout NHWC"),
            ),
        ]
    return cases
