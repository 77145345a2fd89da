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
import inspect
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


#: Forms whose function does the resize itself: its output shape must not follow the
#: input image's size (a function that only does arithmetic, given a whole image,
#: returns that image's size: it takes the card's resized pixels instead).
_GEOMETRY_FORMS = ("path -> array", "PIL.Image -> array", "torch uint8 CHW tensor -> array")
#: First-parameter annotations (substrings) that declare a form.
_DECLARED = (
    (("Path", "str"), "path -> array"),
    (("Image",), "PIL.Image -> array"),
    (("torch", "Tensor"), "torch uint8 CHW tensor -> array"),
    (("tf.", "EagerTensor"), "tf.data map function (file path)"),
    (("ndarray", "np.", "numpy", "Array"), "array -> array (card-resized pixels)"),
)


def declared_form(obj: Any) -> str | None:
    """The form the first parameter's type annotation names, if any."""
    try:
        parameters = list(inspect.signature(obj).parameters.values())
    except (TypeError, ValueError):
        return None
    if not parameters or parameters[0].annotation is inspect.Parameter.empty:
        return None
    annotation = parameters[0].annotation
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    text = text or str(annotation)
    return next((form for keys, form in _DECLARED if any(k in text for k in keys)), None)


def _two_sizes(paths: Sequence[Path], spec: PreprocessSpec) -> tuple[Path, Path | None]:
    """The first image, and one whose decoded size differs from it (if any)."""
    first = load_image(paths[0], spec).size
    for path in paths[1:8]:
        if load_image(path, spec).size != first:
            return paths[0], path
    return paths[0], None


def as_path_function(
    obj: Any, spec: PreprocessSpec, probes: Path | Sequence[Path]
) -> tuple[UserPreprocess, str]:
    """Wrap ``obj`` (see the module docstring) as ``path -> array``, and name its form.

    The form is detected before the run: a type annotation on the first parameter names
    it; otherwise each form is tried on an image, and a form that should resize is
    checked on a second image of another size (``probes``: the images to use).
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

    def tensor(path: Path) -> Any:
        return sys.modules["torch"].from_numpy(np.asarray(decoded(path)).transpose(2, 0, 1).copy())

    if _is_keras_layer(obj):
        return (lambda path: to_numpy(obj(pixels(path, False)))), "Keras layer"
    if _is_torchvision_transform(obj):
        return (lambda path: to_numpy(obj(decoded(path)))), "torchvision transform"
    if not callable(obj):
        raise ParityError(f"--preprocess: {obj!r} is not callable")
    forms: list[tuple[str, UserPreprocess]] = [
        ("path -> array", lambda path: to_numpy(obj(path))),
        ("PIL.Image -> array", lambda path: to_numpy(obj(decoded(path)))),
        ("tf.data map function (file path)", lambda path: to_numpy(_tf_data_call(obj, path))),
        ("array -> array (card-resized pixels)", lambda path: to_numpy(obj(pixels(path, True)))),
    ]
    if "torch" in sys.modules:
        forms.insert(
            2, ("torch uint8 CHW tensor -> array", lambda path: to_numpy(obj(tensor(path))))
        )
    declared = declared_form(obj)
    forms.sort(key=lambda form: form[0] != declared)
    probe, other = _two_sizes([probes] if isinstance(probes, Path) else probes, spec)
    errors = []
    for name, wrapped in forms:
        try:
            result = wrapped(probe)
            second = wrapped(other) if other is not None and name in _GEOMETRY_FORMS else result
        except Exception as exc:  # the user's code may raise anything on a wrong input
            errors.append(f"as {name}: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            continue
        if result.ndim not in (3, 4):
            errors.append(f"as {name}: returned shape {result.shape}")
        elif second.shape != result.shape:
            errors.append(
                f"as {name}: output follows the image size ({result.shape} vs {second.shape}), "
                "so it does no resize"
            )
        else:
            traps = [e for e in errors if "follows the image size" in e]
            note = " (declared by its annotation)" if name == declared else ""
            return wrapped, name + (note or (f" ({traps[-1]})" if traps else ""))
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
