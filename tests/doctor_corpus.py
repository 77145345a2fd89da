"""A corpus of user-written preprocessing pipelines with known faults, and clean controls.

Written as users write them (PIL, numpy, torchvision transforms; TF/Keras in
:func:`tf_cases`), for resnet18's card (torchvision ImageNet: shorter side 256 bilinear
with antialias, centre crop 224, /255, ImageNet mean/std, RGB, NCHW). Each case names
the factors the doctor must report (substrings of its factor labels, one per factor; an
empty tuple is a clean control) and the images it runs on: ``PHOTOS`` (what a user's
photo folder looks like) or ``ALL`` (the fixtures, incl. EXIF-rotated, 16-bit, RGBA).
Used by tests/test_doctor_corpus.py and bench/doctor_corpus.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "images"
PHOTOS = tuple(
    FIXTURES / f"{n}.png"
    for n in ("astronaut", "chelsea", "china", "coffee", "flower", "hubble_deep_field", "rocket")
)
ALL = tuple(sorted(p for p in FIXTURES.iterdir() if p.suffix in (".png", ".jpg")))
PHONE = (*PHOTOS, FIXTURES / "exif_rotated.jpg")
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


@dataclasses.dataclass(frozen=True)
class Case:
    """One user pipeline, the factors it must be diagnosed with, and its images."""

    name: str
    pipeline: Any
    expected: tuple[str, ...]
    images: tuple[Path, ...] = PHOTOS


def _open(path: Path) -> Image.Image:
    """The loader of most tutorials: no EXIF handling, convert('RGB')."""
    return Image.open(path).convert("RGB")


def _short_side(image: Image.Image, size: int = 256) -> tuple[int, int]:
    w, h = image.size
    return (size, int(size * h / w)) if w <= h else (int(size * w / h), size)


def _torchvision_crop(image: Image.Image, size: int = 224) -> Image.Image:
    left = int(round((image.width - size) / 2.0))
    top = int(round((image.height - size) / 2.0))
    return image.crop((left, top, left + size, top + size))


def _normalise_chw(pixels: np.ndarray) -> np.ndarray:
    return ((pixels / 255.0 - MEAN) / STD).transpose(2, 0, 1).astype(np.float32)


def _resized_cropped(image: Image.Image, resample: int = Image.Resampling.BILINEAR) -> np.ndarray:
    image = image.resize(_short_side(image), resample)
    return np.asarray(_torchvision_crop(image), dtype=np.float32)


# --------------------------------------------------------------------- clean controls


def torchvision_transform() -> Any:
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=MEAN.tolist(), std=STD.tolist()),
        ]
    )


def clean_path_torchvision(path: Path) -> Any:
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    return torchvision_transform()(image).unsqueeze(0)  # with a batch axis


def clean_pil_numpy(image: Image.Image) -> np.ndarray:
    return _normalise_chw(_resized_cropped(image))


def clean_float64(path: Path) -> np.ndarray:
    pixels = _resized_cropped(_open(path)).astype(np.float64)
    return ((pixels / 255 - MEAN.astype(np.float64)) / STD.astype(np.float64)).transpose(2, 0, 1)


def clean_torchvision_v2() -> Any:
    import torch
    from torchvision.transforms import v2

    return v2.Compose(
        [
            v2.Resize(256),
            v2.CenterCrop(224),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=MEAN.tolist(), std=STD.tolist()),
        ]
    )


def clean_bgr_model_input(path: Path) -> np.ndarray:
    """cv2-style BGR load, converted back to RGB before normalising: clean."""
    bgr = np.asarray(_open(path))[..., ::-1]
    rgb = Image.fromarray(np.ascontiguousarray(bgr[..., ::-1]))
    return _normalise_chw(_resized_cropped(rgb))


# --------------------------------------------------------------------- faults


def squash_224(path: Path) -> np.ndarray:
    image = _open(path).resize((224, 224), Image.Resampling.BILINEAR)
    return _normalise_chw(np.asarray(image, dtype=np.float32))


def squash_256(path: Path) -> np.ndarray:
    image = _open(path).resize((256, 256), Image.Resampling.BILINEAR)
    return _normalise_chw(np.asarray(image, dtype=np.float32))


def per_image_standardisation(path: Path) -> np.ndarray:
    pixels = _resized_cropped(_open(path))
    return ((pixels - pixels.mean()) / pixels.std()).transpose(2, 0, 1)


def per_channel_standardisation(path: Path) -> np.ndarray:
    pixels = _resized_cropped(_open(path))
    return ((pixels - pixels.mean((0, 1))) / pixels.std((0, 1))).transpose(2, 0, 1)


def bgr_stats_in_rgb_order(path: Path) -> np.ndarray:
    bgr = _resized_cropped(_open(path))[..., ::-1]  # as cv2.imread gives it
    return ((bgr / 255.0 - MEAN) / STD).transpose(2, 0, 1).astype(np.float32)


def bgr_only(path: Path) -> np.ndarray:
    return _normalise_chw(_resized_cropped(_open(path)))[::-1].copy()


def no_exif(path: Path) -> np.ndarray:
    return _normalise_chw(_resized_cropped(_open(path)))


def clips_16bit(path: Path) -> np.ndarray:
    image = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    return _normalise_chw(_resized_cropped(image))


def both_loader_faults(path: Path) -> np.ndarray:
    return _normalise_chw(_resized_cropped(_open(path)))


def bicubic_transform() -> Any:
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(256, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean=MEAN.tolist(), std=STD.tolist()),
        ]
    )


def nearest(image: Image.Image) -> np.ndarray:
    return _normalise_chw(_resized_cropped(image, Image.Resampling.NEAREST))


def torch_interpolate(path: Path) -> Any:
    import torch

    image = _open(path)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
    w, h = _short_side(image)
    x = torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    top, left = int(round((h - 224) / 2.0)), int(round((w - 224) / 2.0))
    x = x[..., top : top + 224, left : left + 224] / 255.0
    return (x - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def pil_default_resize_cv2_order(path: Path) -> np.ndarray:
    """Image.resize's default filter is bicubic; BGR as cv2 gives it, RGB mean/std on it."""
    bgr = np.asarray(_open(path).resize((224, 224)), dtype=np.float32)[..., ::-1]
    return ((bgr / 255 - MEAN) / STD).transpose(2, 0, 1)


def tf_mode(path: Path) -> np.ndarray:
    return (_resized_cropped(_open(path)) / 127.5 - 1.0).transpose(2, 0, 1)


def caffe_mode(path: Path) -> np.ndarray:
    bgr = _resized_cropped(_open(path))[..., ::-1]
    return (bgr - np.array([103.939, 116.779, 123.68])).transpose(2, 0, 1)


def zero_one(path: Path) -> np.ndarray:
    return (_resized_cropped(_open(path)) / 255.0).transpose(2, 0, 1)


def zero_255(path: Path) -> np.ndarray:
    return _resized_cropped(_open(path)).transpose(2, 0, 1)


def channels_last(path: Path) -> np.ndarray:
    return (_resized_cropped(_open(path)) / 255.0 - MEAN) / STD


def crop_then_resize() -> Any:
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.CenterCrop(224),
            transforms.Resize(256),
            transforms.ToTensor(),
            transforms.Normalize(mean=MEAN.tolist(), std=STD.tolist()),
        ]
    )


def alpha_on_white(path: Path) -> np.ndarray:
    image = ImageOps.exif_transpose(Image.open(path))
    if image.mode in ("RGBA", "P"):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    if image.mode.startswith("I"):
        image = Image.fromarray((np.asarray(image) / 257).round().astype(np.uint8))
    return _normalise_chw(_resized_cropped(image.convert("RGB")))


def hand_rolled_tf_bicubic(path: Path) -> np.ndarray:
    """Bicubic, [-1, 1], its own size rounding and crop offsets (floor)."""
    image = _open(path)
    scale = 256 / min(image.size)
    image = image.resize(
        (round(image.width * scale), round(image.height * scale)), Image.Resampling.BICUBIC
    )
    left, top = (image.width - 224) // 2, (image.height - 224) // 2
    pixels = np.asarray(image.crop((left, top, left + 224, top + 224)), dtype=np.float32)
    return (pixels / 127.5 - 1.0).transpose(2, 0, 1)


def jpeg_roundtrip(path: Path) -> np.ndarray:
    """Not a factor the doctor models (re-encoding at quality 30): must stay unexplained."""
    import io

    buffer = io.BytesIO()
    _open(path).save(buffer, format="JPEG", quality=30)
    return _normalise_chw(_resized_cropped(Image.open(buffer).convert("RGB")))


def cases() -> list[Case]:
    """The numpy / PIL / torchvision corpus."""
    return [
        Case("control-torchvision-transform", torchvision_transform(), ()),
        Case("control-path-torchvision-batch-axis", clean_path_torchvision, (), PHONE),
        Case("control-pil-numpy", clean_pil_numpy, ()),
        Case("control-float64", clean_float64, ()),
        Case("control-torchvision-v2", clean_torchvision_v2(), ()),
        Case("control-bgr-converted-back", clean_bgr_model_input, ()),
        Case("squash-224", squash_224, ("resized straight to 224x224",)),
        Case("squash-256", squash_256, ("resized straight to 256x256",)),
        Case("per-image-standardisation", per_image_standardisation, ("per-image stand",)),
        Case("per-channel-standardisation", per_channel_standardisation, ("per-channel",)),
        Case(
            "bgr-stats-rgb-order",
            bgr_stats_in_rgb_order,
            ("channel order BGR", "mean/std applied in the wrong channel order"),
        ),
        Case("bgr", bgr_only, ("channel order BGR",)),
        Case(
            "pil-default-resize-cv2-order",
            pil_default_resize_cv2_order,
            (
                "resized straight to 224x224",
                "resize filter bicubic",
                "channel order BGR",
                "mean/std",
            ),
        ),
        Case("no-exif", no_exif, ("EXIF orientation not applied",), PHONE),
        Case("clips-16bit", clips_16bit, ("16-bit image clipped",), ALL),
        Case(
            "open-convert-on-all-fixtures",
            both_loader_faults,
            ("EXIF orientation not applied", "16-bit image clipped"),
            ALL,
        ),
        Case("bicubic-transform", bicubic_transform(), ("resize filter bicubic",)),
        Case("nearest-pil", nearest, ("resize filter nearest",)),
        Case("torch-interpolate", torch_interpolate, ("antialias off",)),
        Case("tf-mode", tf_mode, ("normalisation 'tf'",)),
        Case("caffe-mode", caffe_mode, ("normalisation 'caffe'", "channel order BGR")),
        Case("zero-one", zero_one, ("value range 0-1",)),
        Case("zero-255", zero_255, ("value range 0-255",)),
        Case("channels-last", channels_last, ("layout NHWC",)),
        Case("crop-then-resize", crop_then_resize(), ("crop then resize",)),
        Case("alpha-on-white", alpha_on_white, ("alpha handled as 'white'",), ALL),
        Case(
            "hand-rolled-bicubic-tf",
            hand_rolled_tf_bicubic,
            ("normalisation 'tf'", "resize filter bicubic", "resized size rounded"),
        ),
    ]


# --------------------------------------------------------------------- TF / Keras


def tf_cases() -> list[Case]:
    """TF/Keras pipelines (imports TensorFlow: after torch, as parity.lazy orders it)."""
    from parity import lazy

    tf = lazy.tensorflow()
    keras = lazy.require("keras")

    def tf_resize_crop(path: Path) -> Any:
        """keras.utils.load_img, tf.image.resize of the shorter side, TF centre crop."""
        image = keras.utils.img_to_array(keras.utils.load_img(path))
        h, w = image.shape[:2]
        size = (256, int(256 * w / h)) if h <= w else (int(256 * h / w), 256)
        image = tf.image.resize(image, size)
        image = tf.image.resize_with_crop_or_pad(image, 224, 224)
        return tf.transpose((image / 255.0 - MEAN) / STD, (2, 0, 1))

    def tf_standardise(path: Path) -> Any:
        pixels = _resized_cropped(_open(path))
        return tf.transpose(tf.image.per_image_standardization(pixels), (2, 0, 1))

    def tf_data_map(path: Any) -> Any:
        """A tf.data map function: file path string tensor in, tensor out."""
        image = tf.cast(tf.io.decode_png(tf.io.read_file(path), channels=3), tf.float32)
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        size = tf.cast(shape * 256.0 / tf.reduce_min(shape), tf.int32)
        image = tf.image.resize_with_crop_or_pad(tf.image.resize(image, size), 224, 224)
        return (image / 255.0 - MEAN) / STD

    layers = keras.Sequential(
        [
            keras.layers.Resizing(224, 224),
            keras.layers.Rescaling(1 / 255),
            keras.layers.Normalization(mean=MEAN.tolist(), variance=(STD**2).tolist()),
        ]
    )
    clean_layers = keras.Sequential(
        [
            keras.layers.Rescaling(1 / 255),
            keras.layers.Normalization(mean=MEAN.tolist(), variance=(STD**2).tolist()),
        ]
    )

    def clean_keras_normalisation(path: Path) -> Any:
        return tf.transpose(clean_layers(_resized_cropped(_open(path))[None])[0], (2, 0, 1))

    return [
        Case("control-keras-normalization-layer", clean_keras_normalisation, ()),
        Case(
            "tf-image-resize-tf-crop",
            tf_resize_crop,
            ("antialias off", "centre crop offset floored"),
        ),
        Case("tf-per-image-standardization", tf_standardise, ("per-image stand",)),
        Case(
            "keras-preprocess-input",
            keras.applications.mobilenet_v2.preprocess_input,
            ("normalisation 'tf'", "layout NHWC"),
        ),
        Case(
            "keras-resizing-layer",
            layers,
            ("resized straight to 224x224", "antialias off", "layout NHWC"),
        ),
        Case(
            "tf-data-map",
            tf_data_map,
            ("antialias off", "centre crop offset floored", "layout NHWC"),
        ),
    ]


#: Pipelines the doctor must call unexplained (no known factor), never a wrong label.
UNEXPLAINED: tuple[tuple[str, Callable[[Path], Any]], ...] = (("jpeg-q30", jpeg_roundtrip),)


def named_exactly(factors: list[str], expected: tuple[str, ...]) -> bool:
    """Every expected factor named by exactly one label, and no other label."""
    if len(factors) != len(expected):
        return False
    return all(sum(e in f for f in factors) == 1 for e in expected)
