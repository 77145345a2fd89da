"""What users bring to the doctor, in the forms they have it.

Preprocessing comes as ``module:attribute`` naming one of (detected in this order):

* a Keras preprocessing layer or model (``keras.layers.Layer``): called on the decoded
  image as float32 ``(1, H, W, 3)`` 0-255;
* a torchvision transform object (``transforms.Compose([...])`` or any object from
  ``torchvision.transforms``, or a ``torch.nn.Module``): called on the decoded PIL image;
* a function, tried with, in turn: the image path (``path -> array``), the decoded PIL
  image (``PIL.Image -> array``), the path as a string tensor through
  ``tf.data.Dataset.map`` (a ``tf.data`` map function that reads the file itself), and
  the card's resized and cropped pixels as float32 ``(1, H, W, 3)`` 0-255 (a Keras
  ``preprocess_input``-style array function, judged on its values only).

"Decoded" is the card's loader (EXIF orientation applied, 16-bit scaled, RGB): give a
``path -> array`` function to have your own loader judged too. Modules are imported with
the working directory importable, after torch and torchvision, so a module that imports
TensorFlow at the top is safe (the import-order trap, ../shared/STACK.md).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from parity import lazy
from parity.errors import ParityError
from parity.fixtures import IMAGE_SUFFIXES
from parity.preprocess import PreprocessSpec, load_image, to_tensor

#: A user preprocessing in the one form the doctor runs: image path -> array.
UserPreprocess = Callable[[Path], Any]


def load_object(target: str, option: str) -> Any:
    """``package.module:attribute`` -> the attribute (the working directory importable)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ParityError(f"{option} {target!r}: expected module:function")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    if lazy.installed("torch"):
        lazy.torch()  # before the user's module, which may import TensorFlow
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ParityError(f"{option} {target!r}: cannot import ({exc})") from None


def call_user(fn: Callable[[], Any], option: str) -> Any:
    """``fn()``; what the user's code raises becomes one line naming the option."""
    try:
        return fn()
    except ParityError:
        raise
    except Exception as exc:  # the user's code may raise anything
        raise ParityError(f"{option}: calling it raised {type(exc).__name__}: {exc}") from None


def load_user_preprocess(target: str) -> Any:
    """The object named by ``--preprocess module:attribute`` (any supported form)."""
    return load_object(target, "--preprocess")


def image_files(folder: Path, option: str = "--images") -> list[Path]:
    """The image files directly in ``folder``, sorted; an error if there are none."""
    if not folder.is_dir():
        raise ParityError(f"{option} {folder}: not a directory")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ParityError(
            f"{option} {folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return files


def to_numpy(value: Any) -> np.ndarray:
    """A numpy/torch/TF array (or the first item of an ``(image, label)`` tuple)."""
    if isinstance(value, tuple | list) and value and not np.isscalar(value[0]):
        value = value[0]
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    elif hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value, dtype=np.float32)


def _is_keras_layer(obj: Any) -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(obj, keras.layers.Layer)


def _is_torchvision_transform(obj: Any) -> bool:
    if type(obj).__module__.startswith("torchvision.transforms"):
        return True
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def _tf_data_call(fn: Callable[..., Any], path: Path) -> Any:
    tf = lazy.tensorflow()
    dataset = tf.data.Dataset.from_tensor_slices([str(path)]).map(fn)
    return next(iter(dataset))


def as_path_function(obj: Any, spec: PreprocessSpec, probe: Path) -> tuple[UserPreprocess, str]:
    """Wrap ``obj`` (see the module docstring) as ``path -> array``, and name its form.

    ``probe`` is an image used to tell the function forms apart.
    """

    def decoded(path: Path) -> Image.Image:
        return load_image(path, spec)

    def pixels(path: Path, geometry_only: bool) -> np.ndarray:
        image = decoded(path)
        if geometry_only:
            plain = spec.replace(
                scale=1.0, mean=(0.0,) * 3, std=(1.0,) * 3, channel_order="RGB", layout="NHWC"
            )
            return to_tensor(image, plain.replace(dtype="float32"))[None]
        return np.asarray(image, dtype=np.float32)[None]

    if _is_keras_layer(obj):
        return (lambda path: to_numpy(obj(pixels(path, False)))), "Keras layer"
    if _is_torchvision_transform(obj):
        return (lambda path: to_numpy(obj(decoded(path)))), "torchvision transform"
    if not callable(obj):
        raise ParityError(f"--preprocess: {obj!r} is not callable")
    forms: Sequence[tuple[str, UserPreprocess]] = (
        ("path -> array", lambda path: to_numpy(obj(path))),
        ("PIL.Image -> array", lambda path: to_numpy(obj(decoded(path)))),
        ("tf.data map function (file path)", lambda path: to_numpy(_tf_data_call(obj, path))),
        ("array -> array (card-resized pixels)", lambda path: to_numpy(obj(pixels(path, True)))),
    )
    errors = []
    for name, wrapped in forms:
        try:
            result = wrapped(probe)
        except Exception as exc:  # the user's code may raise anything on a wrong input
            errors.append(f"as {name}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            continue
        if result.ndim in (3, 4):
            return wrapped, name
        errors.append(f"as {name}: returned shape {result.shape}")
    raise ParityError(
        f"--preprocess: cannot call {getattr(obj, '__name__', obj)!r} on an image in any "
        "supported form (" + "; ".join(errors) + ")"
    )


def representative_batch(generator_fn: Callable[[], Any], channels: int = 3) -> np.ndarray:
    """Drain a TFLite ``representative_dataset`` (yields lists of arrays) into NCHW float32.

    Each yielded item is a list/tuple of the model's inputs (the first is taken), a dict
    (its first value), or one array; each array is one sample or a batch. NHWC samples
    (channels last, as TFLite takes them) are transposed to NCHW.
    """
    samples: list[np.ndarray] = []
    for item in generator_fn():
        if isinstance(item, dict):
            item = next(iter(item.values()))
        if isinstance(item, list | tuple):
            item = item[0]
        array = to_numpy(item)
        samples.extend(array if array.ndim == 4 else array[None])
    if not samples:
        raise ParityError("--representative: the generator yielded nothing")
    shapes = {s.shape for s in samples}
    if len(shapes) > 1 or samples[0].ndim != 3:
        raise ParityError(f"--representative: expected images of one shape, got {shapes}")
    batch = np.stack(samples)
    if batch.shape[-1] == channels and batch.shape[1] != channels:
        batch = batch.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(batch, dtype=np.float32)


def calibration_data(value: str, spec: PreprocessSpec) -> str | np.ndarray:
    """``--calibration``: ``images``, ``noise``, a ``.npy`` batch or a folder of images."""
    if value in ("images", "noise"):
        return value
    path = Path(value)
    if path.suffix == ".npy":
        if not path.is_file():
            raise ParityError(f"--calibration {path}: no such file")
        try:
            batch = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ParityError(f"--calibration {path}: not a numpy array ({exc})") from None
        if batch.ndim != 4 or 3 not in (batch.shape[1], batch.shape[3]):
            raise ParityError(f"--calibration {path}: expected NCHW or NHWC, got {batch.shape}")
        return representative_batch(lambda: [batch])
    if path.is_dir():
        plain = spec.replace(layout="NCHW", dtype="float32")
        files = image_files(path, "--calibration")
        return np.stack([to_tensor(load_image(p, plain), plain) for p in files])
    raise ParityError(f"--calibration {value}: expected images, noise, a .npy file or a folder")
