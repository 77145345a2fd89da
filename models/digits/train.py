"""Train torchvision MobileNetV2 and ResNet-18 (10 classes) on scikit-learn's digits.

Pretrained ImageNet weights cannot be downloaded here, and dataset-level parity (does a
runtime change *accuracy*?) needs a model that actually learned something. This script
gives two, in a couple of minutes on 2 CPU cores, from data that ships inside
scikit-learn (``load_digits``: 1797 8x8 grayscale digits, no download).

Data: each 8x8 digit (values 0..16) is scaled to 8 bits, upscaled with PIL bilinear to
``DataConfig.size`` square, and replicated to RGB. The split is stratified and seeded
(``test_fraction``, ``split_seed``). Training inputs go through the card's own
preprocessing (:func:`parity.preprocess.to_tensor` with ``card.preprocess``), so the
model sees exactly the bytes ``parity run``/``parity eval`` feed every runtime.

Outputs, under the parity cache (``PARITY_CACHE_DIR`` or ``~/.cache/parity``):

* ``trained/<card>-<hash>.pt``: the state_dict (atomic write), plus ``.json`` metrics.
  ``<hash>`` covers the training and data config, the card's builder/num_classes and
  preprocessing sha256, and the torch/torchvision versions; a present file is reused.
* ``digits/test/<class>/<index>.png``: the test split as an ImageFolder (for
  ``parity eval --data``); ``<index>`` is the sample's index in ``load_digits``.
* ``digits/calibration/<class>_<index>.png``: ``calibration_per_class`` images per class
  from the *training* split, the int8 calibration set of the digits cards.

Deterministic: seeded init and shuffling, ``torch.use_deterministic_algorithms(True)``,
a fixed thread count (all restored afterwards), no data-loader workers.

Used two ways::

    .venv/bin/python models/digits/train.py [--model resnet18_digits]... [--force]

and from parity: a card whose ``[weights] default = "trained:digits/train.py"``
makes :func:`parity.weights.load_model` import this file and call
:func:`trained_state_dict` (training on first use, with progress on stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Bump when the training code changes what it produces (part of the weights hash).
FORMAT = 1

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """How the digits are rendered and split."""

    #: 24 is the smallest size where both architectures train well (measured: at 16
    #: MobileNetV2 reaches 95.8%, at 24 98.6%; ResNet-18 98.9% at both); see the report
    #: in bench/digits_accuracy.md.
    size: int = 24
    test_fraction: float = 0.2
    split_seed: int = 0
    calibration_per_class: int = 10


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How one architecture is trained (SGD + Nesterov momentum, one-cycle schedule)."""

    epochs: int
    lr: float
    batch_size: int = 64
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    #: Random translation of training images by up to this many pixels (0: none).
    shift: int = 1
    seed: int = 0
    threads: int = 1


DATA = DataConfig()

#: Card name -> its training recipe.
MODELS: dict[str, TrainConfig] = {
    "mobilenet_v2_digits": TrainConfig(epochs=10, lr=0.05),
    "resnet18_digits": TrainConfig(epochs=8, lr=0.05),
}


def _stderr(message: str) -> None:
    print(f"[digits] {message}", file=sys.stderr, flush=True)


def _cache_dir() -> Path:
    from parity.paths import cache_dir

    return cache_dir()


# -- data ----------------------------------------------------------------------------


def render_digits(data: DataConfig = DATA) -> dict[str, np.ndarray]:
    """All digits as uint8 RGB images, their labels, and the split indices."""
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    pixels = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images = np.stack(
        [
            np.asarray(
                Image.fromarray(p, mode="L")
                .resize((data.size, data.size), Image.Resampling.BILINEAR)
                .convert("RGB")
            )
            for p in pixels
        ]
    )
    labels = digits.target.astype(np.int64)
    train, test = train_test_split(
        np.arange(len(labels)),
        test_size=data.test_fraction,
        stratify=labels,
        random_state=data.split_seed,
    )
    return {"images": images, "labels": labels, "train": np.sort(train), "test": np.sort(test)}


def calibration_indices(digits: dict[str, np.ndarray], data: DataConfig = DATA) -> np.ndarray:
    """The first ``calibration_per_class`` training images of each class."""
    train = digits["train"]
    labels = digits["labels"][train]
    chosen = [train[labels == c][: data.calibration_per_class] for c in range(10)]
    return np.sort(np.concatenate(chosen))


def data_key(data: DataConfig = DATA) -> str:
    blob = json.dumps({"format": FORMAT, "data": dataclasses.asdict(data)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def data_root() -> Path:
    return _cache_dir() / "digits"


def ensure_datasets(
    digits: dict[str, np.ndarray] | None = None, data: DataConfig = DATA
) -> dict[str, Path]:
    """Write the test ImageFolder and the calibration folder, unless already current.

    Each folder is written under a temporary name and renamed into place, with a
    hidden ``.meta.json`` holding the data key (hidden files are skipped by parity's folder
    readers); a folder with another key is replaced.
    """
    from PIL import Image

    root = data_root()
    key = data_key(data)
    folders = {"test": root / "test", "calibration": root / "calibration"}
    for kind, folder in folders.items():
        meta = folder / ".meta.json"
        if meta.is_file() and json.loads(meta.read_text()).get("key") == key:
            continue
        if digits is None:
            digits = render_digits(data)
        tmp = root / f".{kind}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        indices = digits["test"] if kind == "test" else calibration_indices(digits, data)
        for index in indices:
            label = int(digits["labels"][index])
            if kind == "test":
                target = tmp / str(label) / f"{index}.png"
                target.parent.mkdir(exist_ok=True)
            else:
                target = tmp / f"{label}_{index}.png"
            Image.fromarray(digits["images"][index]).save(target)
        (tmp / ".meta.json").write_text(
            json.dumps({"key": key, "data": dataclasses.asdict(data), "count": len(indices)}) + "\n"
        )
        if folder.exists():
            shutil.rmtree(folder)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process wrote it first: keep theirs
            shutil.rmtree(tmp, ignore_errors=True)
    return folders


# -- training ------------------------------------------------------------------------


def weights_key(card: Any, config: TrainConfig, data: DataConfig = DATA) -> str:
    """Hash of everything the trained weights depend on."""
    import torch
    import torchvision

    parts = {
        "format": FORMAT,
        "train": dataclasses.asdict(config),
        "data": dataclasses.asdict(data),
        "builder": card.builder,
        "builder_kwargs": sorted(card.builder_kwargs.items()),
        "num_classes": card.num_classes,
        "preprocess": card.preprocess.sha256,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def config_for(card: Any) -> TrainConfig:
    if card.name not in MODELS:
        from parity.errors import WeightsError

        raise WeightsError(
            f"{Path(__file__).name}: no training recipe for card {card.name!r}; "
            f"known: {', '.join(MODELS)}"
        )
    return MODELS[card.name]


def weights_path(card: Any) -> Path:
    return _cache_dir() / "trained" / f"{card.name}-{weights_key(card, config_for(card))}.pt"


def _tensors(images: np.ndarray, spec: Any) -> np.ndarray:
    from PIL import Image

    from parity.preprocess import to_tensor

    spec = spec.replace(layout="NCHW", dtype="float32")
    return np.stack([to_tensor(Image.fromarray(image), spec) for image in images])


def _shift(batch: Any, shift: int, generator: Any) -> Any:
    """Translate each image by a random integer offset, filling with its corner value."""
    import torch

    if shift == 0:
        return batch
    n, _, h, w = batch.shape
    padded = torch.nn.functional.pad(batch, (shift, shift, shift, shift), mode="replicate")
    offsets = torch.randint(0, 2 * shift + 1, (n, 2), generator=generator)
    return torch.stack(
        [padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())]
    )


def train(
    card: Any,
    config: TrainConfig,
    data: DataConfig = DATA,
    progress: Progress = _stderr,
    digits: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train the card's architecture; return (state_dict, metrics)."""
    import torch

    from parity.weights import build_module

    digits = digits if digits is not None else render_digits(data)
    x_all = torch.from_numpy(_tensors(digits["images"], card.preprocess))
    y_all = torch.from_numpy(digits["labels"])
    x_train, y_train = x_all[digits["train"]], y_all[digits["train"]]
    x_test, y_test = x_all[digits["test"]], y_all[digits["test"]]

    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(config.seed)
        model = build_module(card)
        generator = torch.Generator().manual_seed(config.seed + 1)
        optimizer = torch.optim.SGD(
            model.parameters(),
            lr=config.lr,
            momentum=config.momentum,
            nesterov=True,
            weight_decay=config.weight_decay,
        )
        steps = config.epochs * -(-len(x_train) // config.batch_size)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.lr, total_steps=steps, pct_start=0.25
        )
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        start, cpu_start = time.perf_counter(), time.process_time()
        for epoch in range(config.epochs):
            model.train()
            order = torch.randperm(len(x_train), generator=generator)
            total_loss, correct = 0.0, 0
            for first in range(0, len(order), config.batch_size):
                index = order[first : first + config.batch_size]
                inputs = _shift(x_train[index], config.shift, generator)
                logits = model(inputs)
                loss = loss_fn(logits, y_train[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total_loss += float(loss.detach()) * len(index)
                correct += int((logits.argmax(1) == y_train[index]).sum())
            progress(
                f"{card.name}: epoch {epoch + 1}/{config.epochs} "
                f"loss {total_loss / len(x_train):.4f} train-acc {correct / len(x_train):.4f} "
                f"({time.perf_counter() - start:.0f} s)"
            )
        seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
        model.eval()
        with torch.no_grad():
            predicted = torch.cat(
                [model(x_test[i : i + 256]).argmax(1) for i in range(0, len(x_test), 256)]
            )
        accuracy = float((predicted == y_test).float().mean())
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)
    metrics = {
        "card": card.name,
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "test_accuracy": accuracy,
        "train_images": len(x_train),
        "test_images": len(x_test),
        "input_hw": list(card.preprocess.input_hw),
        "config": dataclasses.asdict(config),
        "data": dataclasses.asdict(data),
    }
    progress(
        f"{card.name}: test accuracy {accuracy:.4f} on {len(x_test)} images, "
        f"trained in {seconds:.0f} s wall / {cpu_seconds:.0f} s CPU"
    )
    return model.state_dict(), metrics


def trained_state_dict(card: Any, progress: Progress = _stderr, force: bool = False) -> dict:
    """The card's trained state_dict: from the cache, or trained now (and cached).

    Also makes sure the test ImageFolder and the calibration folder exist.
    """
    import torch

    path = weights_path(card)
    ensure_datasets()
    if path.is_file() and not force:
        loaded: dict = torch.load(path, map_location="cpu", weights_only=True)
        return loaded
    progress(f"training {card.name} on sklearn digits (first use; cached at {path})")
    state_dict, metrics = train(card, config_for(card), progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(dict(state_dict), tmp)
    path.with_suffix(".json").write_text(json.dumps(metrics, indent=2) + "\n")
    os.replace(tmp, path)
    return dict(state_dict)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", choices=sorted(MODELS), help="default: all")
    parser.add_argument("--force", action="store_true", help="retrain even if cached")
    args = parser.parse_args(argv)
    import torch  # noqa: F401  (before anything that may import TensorFlow)

    from parity.zoo import get_card

    for name in args.model or list(MODELS):
        card = get_card(name)
        trained_state_dict(card, force=args.force)
        path = weights_path(card)
        metrics = path.with_suffix(".json")
        _stderr(f"{name}: {path}")
        if metrics.is_file():
            print(metrics.read_text().strip())
    _stderr(f"test ImageFolder: {data_root() / 'test'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
