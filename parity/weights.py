"""Build a model card's torch module with its weights (torch imported lazily).

Four weight sources:

* ``calibrated`` (default): seeded init, BatchNorm affine parameters spread, then the
  BatchNorm running statistics re-estimated on the calibration images. Plain init leaves
  mean 0 / var 1, which collapses activations layer by layer (logits ~1e-9) and hides
  every BatchNorm bug; calibrated weights give realistic activation scales.
* a torchvision weights member name (``IMAGENET1K_V1``) through torchvision's loader,
  which needs the network or a filled torch hub cache;
* a path to a local state_dict file, loaded with ``weights_only=True``;
* ``trained:<script.py>`` (path relative to the card's file): the script is imported by path
  and its ``trained_state_dict(card)`` returns the state_dict, training it on first use
  and caching it itself (``models/digits/train.py``).

The result is cached under the parity cache directory and identified by the sha256 of
its tensors, recorded in every report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.util
import io
import json
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from parity import atomic, lazy
from parity.errors import ModelCardError, WeightsError
from parity.fixtures import calibration_images, file_sha256
from parity.paths import cache_dir, calibration_dir, find_project
from parity.preprocess import preprocess_batch
from parity.threads import BN_THREADS, threads
from parity.zoo import ModelCard

CALIBRATED = "calibrated"
#: Prefix of a weights source made by a training script: ``trained:<path>``.
TRAINED = "trained:"
#: Calibration batch size for BatchNorm statistics (all 32 calibration images).
_BN_BATCH = 32


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    """A torch module in eval mode plus where its weights came from."""

    module: Any  # torch.nn.Module
    source: str
    sha256: str

    def state_dict_numpy(self) -> dict[str, np.ndarray]:
        """The state_dict as numpy arrays (for the Keras weight transfer)."""
        return {k: v.detach().cpu().numpy() for k, v in self.module.state_dict().items()}


@dataclasses.dataclass(frozen=True)
class HandedWeights:
    """Weights loaded in the torch worker, handed to another worker as a ``.npz`` file.

    What exporters outside torch need (the Keras weight transfer, cache keys): the
    source, the sha256 and the state_dict as numpy arrays, without importing torch.
    """

    source: str
    sha256: str
    state_dict_path: Path

    @property
    def module(self) -> Any:
        raise RuntimeError("the torch module lives in the torch worker, not here")

    def state_dict_numpy(self) -> dict[str, np.ndarray]:
        with np.load(self.state_dict_path) as arrays:
            return {k: arrays[k] for k in arrays.files}


#: The weights under test: loaded here, or handed over by the torch worker.
Weights = LoadedModel | HandedWeights


def state_dict_sha256(state_dict: Mapping[str, Any]) -> str:
    """Hash of names, dtypes, shapes and bytes, independent of the file format."""
    digest = hashlib.sha256()
    for key in sorted(state_dict):
        array = np.ascontiguousarray(state_dict[key].detach().cpu().numpy())
        digest.update(f"{key}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


#: How a card's builder is called (docs/model-cards.md).
SIGNATURE = "builder(weights=None, num_classes=<num_classes>, **builder_kwargs) -> torch.nn.Module"


def _builder(card: ModelCard) -> Any:
    """The card's builder function, imported with the project root on ``sys.path``."""
    root = find_project().root
    if root is not None and str(root) not in sys.path:
        sys.path.insert(0, str(root))
    module_name, _, function = card.builder.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelCardError(
            f"{card.path}: builder {card.builder!r} not found ({exc}); "
            f"importable from the project root {root or Path.cwd()}?"
        ) from None
    except Exception as exc:  # the user's module raised while being imported
        raise ModelCardError(
            f"{card.path}: importing builder module {module_name!r} raised "
            f"{type(exc).__name__}: {exc}"
        ) from None
    builder = getattr(module, function, None)
    if not callable(builder):
        raise ModelCardError(f"{card.path}: builder {card.builder!r} not found (no function)")
    return builder


def build_module(card: ModelCard, **kwargs: Any) -> Any:
    """The card's architecture with fresh (uninitialised-for-parity) weights."""
    torch = lazy.torch()
    builder = _builder(card)
    try:
        module = builder(
            weights=None, num_classes=card.num_classes, **card.builder_kwargs, **kwargs
        )
    except Exception as exc:  # the user's builder (or its kwargs from the card) failed
        raise ModelCardError(
            f"{card.path}: builder {card.builder!r} raised {type(exc).__name__}: {exc} "
            f"(it is called as {SIGNATURE})"
        ) from None
    if not isinstance(module, torch.nn.Module):
        raise ModelCardError(
            f"{card.path}: builder {card.builder!r} returned a {type(module).__name__}, "
            f"expected a torch.nn.Module ({SIGNATURE})"
        )
    return module


def load_model(card: ModelCard, weights: str | None = None) -> LoadedModel:
    """The card's torch module in eval mode, with weights from ``weights`` (or the card's)."""
    source = weights or card.weights
    file_digest = None  # of a state_dict file's bytes
    if source == CALIBRATED:
        module = _calibrated(card)
    elif source.startswith(TRAINED):
        module = _trained(card, source.removeprefix(TRAINED))
    elif (path := state_dict_path(card, weights)) is not None:
        module, file_digest = _from_state_dict_file(card, path)
    else:
        module = _from_torchvision(card, source)
    module.eval()
    loaded = LoadedModel(module, source, state_dict_sha256(module.state_dict()))
    if file_digest is not None:  # for the next run: known without torch
        atomic.write_text(_state_dict_sidecar(card, file_digest), loaded.sha256 + "\n")
    return loaded


def state_dict_path(card: ModelCard, weights: str | None = None) -> Path | None:
    """The state_dict file ``weights`` (or the card's weights) names, or None for another
    source; a relative path in the card is relative to the card's file."""
    source = weights or card.weights
    if source == CALIBRATED or source.startswith(TRAINED):
        return None
    if Path(source).suffix not in (".pt", ".pth", ".bin") and os.sep not in source:
        return None  # a torchvision weights member
    path = Path(source)
    return card.path.parent / path if weights is None and not path.is_absolute() else path


def _from_state_dict_file(card: ModelCard, path: Path) -> tuple[Any, str]:
    """The card's module with the file's tensors, and the sha256 of the bytes loaded (read
    once: a file rewritten meanwhile, by a training run, cannot pair one's hash with the
    other's tensors)."""
    torch = lazy.torch()
    if not path.is_file():
        raise WeightsError(f"{path}: state_dict file not found")
    data = path.read_bytes()
    try:
        loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise WeightsError(
            f"{path}: not a loadable torch state_dict ({type(exc).__name__}: {exc})"
        ) from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict):
        raise WeightsError(f"{path}: holds a {type(loaded).__name__}, not a state_dict")
    loaded = {str(k).removeprefix("module."): v for k, v in loaded.items()}
    bad = [k for k, v in loaded.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsError(
            f"{path}: value of {bad[0]!r} is a {type(loaded[bad[0]]).__name__}, not a tensor"
        )
    module = build_module(card)
    expected = module.state_dict()
    for key, tensor in loaded.items():
        if key in expected and tuple(tensor.shape) != tuple(expected[key].shape):
            raise WeightsError(
                f"{path}: does not fit {card.path.name}: tensor '{key}' has shape "
                f"{tuple(tensor.shape)}, the card's model expects {tuple(expected[key].shape)} "
                f"(num_classes = {card.num_classes}?)"
            )
    try:
        result = module.load_state_dict(loaded, strict=False)
    except RuntimeError as exc:  # anything else that does not fit the card's architecture
        raise WeightsError(f"{path}: does not fit {card.name} ({_first_line(exc)})") from None
    if result.missing_keys or result.unexpected_keys:
        raise WeightsError(
            f"{path}: does not fit {card.name}: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return module, hashlib.sha256(data).hexdigest()


def _trained(card: ModelCard, script: str) -> Any:
    """Weights from a training script's ``trained_state_dict(card)`` (which caches them)."""
    path = Path(script) if Path(script).is_absolute() else card.path.parent / script
    if not path.is_file():
        raise WeightsError(f"{card.path}: training script {path} not found")
    lazy.torch()  # before the script, which may import anything
    name = "parity_trained_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        sys.modules[name] = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(sys.modules[name])
        except Exception as exc:  # the user's script raised while being imported
            del sys.modules[name]
            raise WeightsError(f"{path}: importing it raised {type(exc).__name__}: {exc}") from None
        except BaseException:
            del sys.modules[name]
            raise
    function = getattr(sys.modules[name], "trained_state_dict", None)
    if function is None:
        raise WeightsError(f"{path}: has no trained_state_dict(card) function")
    module = build_module(card)
    try:
        module.load_state_dict(function(card))
    except (RuntimeError, TypeError, AttributeError) as exc:  # keys, shapes, non-tensors
        raise WeightsError(
            f"{path}: its state_dict does not fit {card.name} ({_first_line(exc)})"
        ) from None
    return module


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _from_torchvision(card: ModelCard, member: str) -> Any:
    torch = lazy.torch()
    import torchvision

    if card.torchvision_weights is None:
        raise WeightsError(f"{card.path}: no torchvision_weights enum, cannot load {member!r}")
    enum = torchvision.models.get_model_weights(card.builder.partition(":")[2])
    if member not in enum.__members__:
        raise WeightsError(
            f"unknown weights {member!r} for {card.name}; torchvision has "
            f"{list(enum.__members__)}; "
            "or use 'calibrated' or a state_dict path"
        )
    entry = enum[member]
    target = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(entry.url)
    try:
        return _builder(card)(weights=entry, **card.builder_kwargs)
    except Exception as exc:  # URLError, hash mismatch, ...
        raise WeightsError(
            f"cannot load torchvision weights {enum.__name__}.{member}: {type(exc).__name__}: "
            f"{exc}. Without network, download {entry.url} elsewhere and place it at {target}"
        ) from None


def calibration_key(card: ModelCard) -> str:
    """Everything the calibrated weights depend on, hashed (torch's version read, not imported)."""
    calibration = calibration_images(calibration_dir())
    parts = [
        "bn-float64-fp16-v2",  # the recalibration algorithm; bump when it changes
        card.builder,
        repr(sorted(card.builder_kwargs.items())),
        str(card.num_classes),
        str(card.seed),
        lazy.package_version("torch"),
        card.preprocess.sha256,
        *(f.sha256 or "" for f in calibration),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def shipped_statistics_path(card: ModelCard) -> Path:
    """The BatchNorm statistics shipped beside the card (``<card>.calibrated.npz``)."""
    return card.path.with_name(f"{card.name}.calibrated.npz")


def _state_dict_sidecar(card: ModelCard, file_digest: str) -> Path:
    """Where the sha256 of a state_dict file's tensors loaded into the card's module is
    recorded: keyed by the file's bytes (``file_digest``, their sha256) and what the module
    is built from (the tensors are the file's, each cast to the module's dtype)."""
    parts = [
        "state-dict-v1",  # bump when what load_model does with a state_dict file changes
        card.builder,
        repr(sorted(card.builder_kwargs.items())),
        str(card.num_classes),
        lazy.package_version("torch"),
        file_digest,
    ]
    key = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    return cache_dir() / "weights" / f"{card.name}-state_dict-{key}.sha256"


def _weights_path(card: ModelCard, key: str) -> Path:
    return cache_dir() / "weights" / f"{card.name}-calibrated-{key}.pt"


def _shipped_statistics(card: ModelCard, key: str) -> dict[str, np.ndarray] | None:
    """The shipped statistics if they were made for exactly this ``key``."""
    path = shipped_statistics_path(card)
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    return arrays if str(arrays.get("key")) == key else None


def cached_weights_sha256(card: ModelCard, weights: str | None = None) -> str | None:
    """The sha256 of the weights ``load_model`` would give, known without torch, or None.

    Calibrated weights are deterministic given :func:`calibration_key`: their hash is read
    from beside the cached weights, or from the statistics shipped with the card. A
    state_dict file's is recorded by the worker that first loaded it, keyed by the file's
    bytes (:func:`_state_dict_sidecar`): a warm run with a user's own weights then needs
    no torch worker (bench/speed2_quiet.md: 6.6 s -> 1.85 s for ``-r ort_dynamo``).
    """
    if (path := state_dict_path(card, weights)) is not None:
        if not path.is_file():
            return None
        sidecar = _state_dict_sidecar(card, file_sha256(path))
        return sidecar.read_text().strip() if sidecar.is_file() else None
    if (weights or card.weights) != CALIBRATED:
        return None
    key = calibration_key(card)
    sidecar = _weights_path(card, key).with_suffix(".sha256")
    if sidecar.is_file():
        return sidecar.read_text().strip()
    shipped = _shipped_statistics(card, key)
    return None if shipped is None else str(shipped["sha256"])


def _calibrated(card: ModelCard) -> Any:
    """Seeded init + BatchNorm statistics (shipped, or re-estimated), cached by their key."""
    torch = lazy.torch()
    key = calibration_key(card)
    path = _weights_path(card, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(path.with_suffix(".lock")):  # computed once across processes
        if path.is_file():
            module = build_module(card)
            try:
                module.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
                return module
            except Exception:  # a damaged cache entry (truncated, foreign): compute it again
                path.unlink(missing_ok=True)
        shipped = _shipped_statistics(card, key)
        module = _seeded_with_statistics(card, shipped)
        sha256 = state_dict_sha256(module.state_dict())
        if shipped is not None and sha256 != str(shipped["sha256"]):  # never trust a stale file
            module = _seeded_with_statistics(card, None)
            sha256 = state_dict_sha256(module.state_dict())
        _atomic_save(torch, module.state_dict(), path)
        atomic.write_text(path.with_suffix(".sha256"), sha256 + "\n")
    return module


def _seeded_with_statistics(card: ModelCard, statistics: Mapping[str, np.ndarray] | None) -> Any:
    """The seeded module, BatchNorm affine spread, running statistics set or estimated."""
    torch = lazy.torch()
    torch.manual_seed(card.seed)
    module = build_module(card)
    generator = torch.Generator().manual_seed(card.seed + 1)
    norms = _batchnorms(module)
    spread_batchnorm_affine(norms.values(), generator)
    if statistics is None:
        calibration = calibration_images(calibration_dir())
        batch = preprocess_batch([f.path for f in calibration[:_BN_BATCH]], card.preprocess)
        with threads(torch, BN_THREADS):
            estimate_batchnorm_statistics(module, norms.values(), torch.from_numpy(batch))
    else:
        with torch.no_grad():
            for name, bn in norms.items():
                for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                    value = torch.from_numpy(statistics[f"{name}.{buffer}"])
                    getattr(bn, buffer).copy_(value)
    module.eval()
    return module


def calibrated_statistics(card: ModelCard) -> dict[str, np.ndarray]:
    """Re-estimate the card's BatchNorm statistics now: what ships as ``.calibrated.npz``.

    Running means and variances are float16 (they are rounded to it), so the file is small
    and exact; ``key`` and ``sha256`` say which weights they make.
    """
    module = _seeded_with_statistics(card, None)
    arrays: dict[str, np.ndarray] = {}
    for name, bn in _batchnorms(module).items():
        arrays[f"{name}.running_mean"] = bn.running_mean.numpy().astype(np.float16)
        arrays[f"{name}.running_var"] = bn.running_var.numpy().astype(np.float16)
        arrays[f"{name}.num_batches_tracked"] = bn.num_batches_tracked.numpy()
    arrays["key"] = np.array(calibration_key(card))
    arrays["sha256"] = np.array(state_dict_sha256(module.state_dict()))
    return arrays


def _batchnorms(module: Any) -> dict[str, Any]:
    torch = lazy.torch()
    batchnorm = torch.nn.modules.batchnorm._BatchNorm
    return {name: m for name, m in module.named_modules() if isinstance(m, batchnorm)}


def spread_batchnorm_affine(norms: Iterable[Any], generator: Any) -> None:
    """Seeded gamma in [0.5, 1.5] and beta ~ N(0, 0.2), so BatchNorm bugs show."""
    torch = lazy.torch()
    with torch.no_grad():
        for bn in norms:
            bn.weight.copy_(torch.empty_like(bn.weight).uniform_(0.5, 1.5, generator=generator))
            bn.bias.copy_(torch.empty_like(bn.bias).normal_(0.0, 0.2, generator=generator))


def estimate_batchnorm_statistics(module: Any, norms: Iterable[Any], batch: Any) -> None:
    """Set BatchNorm running statistics from ``batch``.

    Estimated in one float64 pass with cumulative averaging (``momentum=None``), then
    rounded to float16 precision: float64 sums that differ in the last bits between CPUs
    (summation order, SIMD width) land on the same float16 value, so the weights hash —
    recorded in every golden — is the same on every machine.
    """
    torch = lazy.torch()
    norms = list(norms)
    with torch.no_grad():
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None
        module.double().train()
        module(batch.double())
        module.float().eval()
        for bn in norms:
            bn.momentum = 0.1
            bn.running_mean.copy_(bn.running_mean.half().float())
            bn.running_var.copy_(bn.running_var.half().float())


def _atomic_save(torch: Any, state_dict: Mapping[str, Any], path: Path) -> None:
    with atomic.replacing(path) as tmp:
        torch.save(dict(state_dict), tmp)


def class_names_path(card: ModelCard) -> Path | None:
    """Where :func:`class_names` keeps the card's class names (None: the card has none)."""
    if card.torchvision_weights is None or not lazy.installed("torchvision"):
        return None
    version = lazy.package_version("torchvision")
    return cache_dir() / "class_names" / f"{card.torchvision_weights}-{version}.json"


def cached_class_names(card: ModelCard) -> list[str] | None:
    """The class names :func:`class_names` cached (the torch worker does), without torch."""
    path = class_names_path(card)
    if path is None or not path.is_file():
        return None
    categories: list[str] = json.loads(path.read_text())
    return categories if len(categories) == card.num_classes else None


def class_names(card: ModelCard) -> list[str] | None:
    """ImageNet class names from torchvision metadata (no download), if the card has them.

    Kept in the cache (per torchvision version), so that later calls import no torch.
    """
    path = class_names_path(card)
    if path is None:
        return None
    if not path.is_file():
        lazy.torch()
        import torchvision

        enum = getattr(torchvision.models, str(card.torchvision_weights))
        atomic.write_text(path, json.dumps(list(next(iter(enum)).meta["categories"])))
    return cached_class_names(card)


if __name__ == "__main__":  # python -m parity.weights CARD...: (re)write the shipped statistics
    from parity.zoo import get_card

    for name in sys.argv[1:]:
        card = get_card(name)
        arrays: dict[str, Any] = calibrated_statistics(card)
        np.savez(shipped_statistics_path(card), **arrays)
        print(f"{shipped_statistics_path(card)}: {cached_weights_sha256(card)}")
