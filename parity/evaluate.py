"""Dataset-level parity: accuracy, top-1 agreement with torch, and flipped predictions.

``parity run`` compares every tap on a handful of fixtures; this module asks the question
users ask before shipping: on a labelled dataset, does a runtime change the *answers*?
For torch and each runtime variant it reports accuracy, top-1 agreement with torch, and
every image whose top-1 prediction flips against torch (with the logit margins).

Dataset: an ImageFolder tree, ``root/<class folder>/<image>``. Each class folder is mapped
to a class index by the first rule that applies:

1. ``root/classes.txt``: line ``i`` (non-empty lines, 0-based) is the folder name of class
   ``i``. ``root/synsets.txt``: the same, first whitespace-separated token of each line
   (ImageNet's ``LOC_synset_mapping.txt`` format: ``n01440764 tench, Tinca tinca``).
2. The card has class names (torchvision categories) and every folder is one of them.
3. Every folder name is an integer in ``[0, num_classes)``: that integer.
4. Exactly ``num_classes`` folders: sorted order (torchvision's ImageFolder rule, which is
   also ImageNet's: the 1000 synset folders sorted give the class indices).

Anything else is an error naming the folders and the fix. Hidden files and the mapping
files are ignored; any other file at the root, a file in a class folder that is not an
image (by suffix), an empty class folder, or an undecodable image is an error.

Image order is deterministic: sorted by (class folder, file name); an image's *index* is
its position in that order. ``limit`` keeps ``limit`` images spread evenly over that
order (so every class is represented); ``shard=(k, n)`` then keeps every ``n``-th of
those starting at ``k``. Shard results are merged by :func:`merge_results` into exactly
the result of the unsharded run (counts add; flips concatenate in index order).

Frameworks are reached only through the runners (:func:`parity.harness.make_runner`);
this module is numpy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity import atomic
from parity.backends.base import OUTPUT
from parity.errors import FixtureError, ParityError
from parity.fixtures import IMAGE_SUFFIXES
from parity.preprocess import preprocess_batch

#: JSON format of an evaluation result (bump on incompatible changes).
FORMAT = 1
KIND = "parity-eval"
#: Root-level files that define the folder -> class index mapping.
MAPPING_FILES = ("classes.txt", "synsets.txt")
DEFAULT_BATCH = 64

Progress = Callable[[str], None]
OnBatch = Callable[[int, int], None]


# -- the dataset -----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LabelledImage:
    index: int
    path: Path
    #: ``<class folder>/<file>``: stable across machines, used in reports.
    name: str
    label: int


@dataclasses.dataclass(frozen=True)
class ImageFolder:
    """A scanned ImageFolder tree with its class mapping."""

    root: Path
    #: class folder name -> class index.
    classes: dict[str, int]
    #: which rule mapped the folders (``classes.txt``, ``class names``, ...).
    mapping: str
    images: tuple[LabelledImage, ...]

    @property
    def sha256(self) -> str:
        """Fingerprint of the listing (names, labels, file sizes); shards must agree on it."""
        digest = hashlib.sha256()
        for image in self.images:
            digest.update(f"{image.name}|{image.label}|{image.path.stat().st_size}\n".encode())
        return digest.hexdigest()


def _mapping_file(root: Path) -> tuple[str, list[str]] | None:
    for name in MAPPING_FILES:
        path = root / name
        if path.is_file():
            lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
            if name == "synsets.txt":
                lines = [line.split()[0] for line in lines]
            return name, lines
    return None


def _class_indices(
    root: Path, folders: Sequence[str], num_classes: int, class_names: Sequence[str] | None
) -> tuple[dict[str, int], str]:
    """Folder name -> class index, by the rules in the module docstring."""
    mapping = _mapping_file(root)
    if mapping is not None:
        file, names = mapping
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise FixtureError(f"{root / file}: names repeat: {duplicated[:5]}")
        if len(names) != num_classes:
            raise FixtureError(
                f"{root / file}: lists {len(names)} classes, the model has {num_classes}"
            )
        unknown = [f for f in folders if f not in names]
        if unknown:
            raise FixtureError(f"{root}: class folders not listed in {file}: {unknown[:5]}")
        return {f: names.index(f) for f in folders}, file
    if class_names is not None and all(f in class_names for f in folders):
        ambiguous = [f for f in folders if list(class_names).count(f) > 1]
        if ambiguous:
            raise FixtureError(
                f"{root}: class folder names {ambiguous} are ambiguous in the model's class "
                "names (several classes share them); name the folders by synset and add a "
                "synsets.txt"
            )
        return {f: list(class_names).index(f) for f in folders}, "class names"
    if all(f.isdigit() and int(f) < num_classes for f in folders):
        return {f: int(f) for f in folders}, "numeric folder names"
    if len(folders) == num_classes:
        return {f: i for i, f in enumerate(sorted(folders))}, "sorted folder order"
    raise FixtureError(
        f"{root}: cannot map {len(folders)} class folders (e.g. {list(folders)[:3]}) to the "
        f"model's {num_classes} classes: they are not its class names, not class indices, "
        f"and not one folder per class; add a classes.txt or synsets.txt (one folder name "
        f"per line, in class-index order) at the root"
    )


def scan_image_folder(
    root: Path, num_classes: int, class_names: Sequence[str] | None = None
) -> ImageFolder:
    """Scan ``root/<class>/<image>`` into a labelled, deterministically ordered listing."""
    root = Path(root)
    if not root.is_dir():
        raise FixtureError(f"{root}: no such dataset directory")
    folders: list[Path] = []
    strays: list[Path] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name in MAPPING_FILES:
            continue
        (folders if entry.is_dir() else strays).append(entry)
    if strays:
        raise FixtureError(
            f"{strays[0]}: a file at the root of an ImageFolder dataset; images go in one "
            "sub-folder per class (only classes.txt / synsets.txt may sit at the root)"
        )
    if not folders:
        raise FixtureError(f"{root}: no class folders (expected ImageFolder layout root/<class>/)")
    classes, rule = _class_indices(root, [f.name for f in folders], num_classes, class_names)
    images: list[LabelledImage] = []
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        if not files:
            raise FixtureError(f"{folder}: empty class folder")
        for path in files:
            if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                kind = "a folder" if path.is_dir() else "not an image file"
                raise FixtureError(
                    f"{path}: {kind} inside a class folder (images only: "
                    f"{', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            name = f"{folder.name}/{path.name}"
            images.append(LabelledImage(len(images), path, name, classes[folder.name]))
    return ImageFolder(root, classes, rule, tuple(images))


# -- selection and sharding ------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """``"k/N"`` -> ``(k, N)`` with ``0 <= k < N``."""
    try:
        k, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise ParityError(f"--shard {text!r}: expected k/N, e.g. 0/4") from None
    if n < 1 or not 0 <= k < n:
        raise ParityError(f"--shard {text!r}: need 0 <= k < N (shards are numbered from 0)")
    return k, n


def select_indices(total: int, limit: int | None = None) -> list[int]:
    """The evaluated image indices: all, or ``limit`` spread evenly over the order."""
    if limit is None or limit >= total:
        return list(range(total))
    if limit < 1:
        raise ParityError(f"--limit {limit}: must be at least 1")
    return [int(i) for i in np.linspace(0, total - 1, limit).round().astype(int)]


def shard_indices(selected: Sequence[int], shard: tuple[int, int] | None) -> list[int]:
    if shard is None:
        return list(selected)
    k, n = shard
    return list(selected[k::n])


# -- results ---------------------------------------------------------------------------


@dataclasses.dataclass
class VariantScore:
    """One variant's counts over the evaluated images."""

    name: str
    images: int = 0
    correct: int = 0
    #: images whose top-1 equals torch's.
    agree: int = 0
    flips: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    error: str | None = None
    #: inference wall time, seconds (not compared between runs).
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.images if self.images else math.nan

    @property
    def agreement(self) -> float:
        return self.agree / self.images if self.images else math.nan

    @property
    def images_per_s(self) -> float:
        """Inference throughput (preprocessing excluded)."""
        return self.images / self.seconds if self.seconds > 0 else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "images": self.images,
            "correct": self.correct,
            "agree": self.agree,
            "accuracy": self.accuracy,
            "agreement": self.agreement,
            "flips": self.flips,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 1),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariantScore:
        return cls(
            data["name"], int(data["images"]), int(data["correct"]), int(data["agree"]),
            list(data["flips"]), data.get("error"), float(data.get("seconds", 0.0)),
        )  # fmt: skip


def score_batch(
    score: VariantScore,
    indices: Sequence[int],
    names: Sequence[str],
    labels: np.ndarray,
    torch_logits: np.ndarray,
    logits: np.ndarray,
) -> None:
    """Add one batch to ``score``: correct, agreement, and each flip with its margins.

    A flip's ``margin`` is torch's own logit gap between its class and the runtime's
    (small: a near-tie that any rounding may flip; large: the runtime changed a confident
    answer); ``runtime_margin`` is the same gap in the runtime's logits.
    """
    if logits.shape != torch_logits.shape:
        raise ValueError(f"{score.name}: logits {logits.shape} vs torch {torch_logits.shape}")
    ours, theirs = logits.argmax(axis=1), torch_logits.argmax(axis=1)
    score.images += len(labels)
    score.correct += int((ours == labels).sum())
    score.agree += int((ours == theirs).sum())
    for row in map(int, np.flatnonzero(ours != theirs)):
        t, r = int(theirs[row]), int(ours[row])
        score.flips.append(
            {
                "index": int(indices[row]),
                "path": names[row],
                "label": int(labels[row]),
                "torch": t,
                "runtime": r,
                "margin": float(torch_logits[row, t] - torch_logits[row, r]),
                "runtime_margin": float(logits[row, r] - logits[row, t]),
            }
        )


@dataclasses.dataclass
class EvalResult:
    """Everything one (possibly sharded) evaluation produced; JSON round-trips."""

    model: str
    weights: dict[str, str]
    preprocess_sha256: str
    dataset: dict[str, Any]
    #: ``{"k": .., "n": ..}`` or None for a whole (or merged) evaluation.
    shard: dict[str, int] | None
    #: image indices this result covers, ascending.
    indices: list[int]
    scores: list[VariantScore]
    seconds: float = 0.0

    @property
    def variants(self) -> list[str]:
        return [s.name for s in self.scores]

    @property
    def failed(self) -> bool:
        return any(s.error for s in self.scores)

    def score(self, name: str) -> VariantScore:
        return next(s for s in self.scores if s.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": KIND,
            "format": FORMAT,
            "model": self.model,
            "weights": self.weights,
            "preprocess_sha256": self.preprocess_sha256,
            "dataset": self.dataset,
            "shard": self.shard,
            "indices": self.indices,
            "variants": [s.to_dict() for s in self.scores],
            "seconds": round(self.seconds, 3),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> EvalResult:
        if data.get("kind") != KIND or data.get("format") != FORMAT:
            raise ParityError(
                f"{source}: not a parity eval result (kind {data.get('kind')!r}, "
                f"format {data.get('format')!r}; expected {KIND!r} format {FORMAT})"
            )
        try:
            return cls(
                data["model"], dict(data["weights"]), data["preprocess_sha256"],
                dict(data["dataset"]), data["shard"], [int(i) for i in data["indices"]],
                [VariantScore.from_dict(v) for v in data["variants"]],
                float(data.get("seconds", 0.0)),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise ParityError(f"{source}: malformed parity eval result ({exc!r})") from None

    def comparable(self) -> dict[str, Any]:
        """The result without timings and the dataset's location (for equality checks)."""
        data = self.to_dict()
        data.pop("seconds")
        data["dataset"] = {k: v for k, v in data["dataset"].items() if k != "root"}
        for variant in data["variants"]:
            variant.pop("seconds")
            variant.pop("images_per_s")
        return data


def write_result(result: EvalResult, path: Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(result.to_dict(), indent=1) + "\n")


def read_result(path: Path) -> EvalResult:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ParityError(f"{path}: no such eval result file") from None
    except json.JSONDecodeError as exc:
        raise ParityError(f"{path}: not valid JSON ({exc})") from None
    return EvalResult.from_dict(data, str(path))


# -- running ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """What to evaluate."""

    data: Path
    model: str
    runtimes: Sequence[str] | None = None
    weights: str | None = None
    shard: tuple[int, int] | None = None
    limit: int | None = None
    batch_size: int = DEFAULT_BATCH
    threads: int = 2
    rebuild: bool = False
    #: Where the torch reference runs: ``cpu``, ``cuda`` (strict fp32, TF32 off) or
    #: ``auto`` (cuda when a GPU is usable). The other variants run where they run.
    device: str = "cpu"


def reference_device(device: str) -> str:
    """``cpu`` or ``cuda`` for ``--device``; a requested GPU that is not there is an error."""
    if device not in ("cpu", "cuda", "auto"):
        raise ParityError(f"--device {device!r}: must be cpu, cuda or auto")
    if device == "cpu":
        return device
    from parity.backends.torch.runner import cuda_unavailable

    reason = cuda_unavailable()
    if reason is not None and device == "cuda":
        raise ParityError(f"--device cuda: {reason}")
    return "cpu" if reason is not None else "cuda"


def evaluate(
    config: EvalConfig,
    progress: Progress = lambda message: None,
    on_batch: OnBatch = lambda done, total: None,
) -> EvalResult:
    """Run torch and every requested variant over the (selected, sharded) dataset.

    Each batch is preprocessed once and fed to every runner (taps off). A variant whose
    export or runtime raises a non-:class:`ParityError` exception is recorded as failed
    (its error in the result) and the others carry on; a :class:`ParityError` (bad input,
    corrupt artifact) propagates.
    """
    from parity.harness import RunConfig, Session, make_runner
    from parity.variants import REFERENCE, VARIANTS, resolve_variants
    from parity.weights import class_names

    start = time.perf_counter()
    if config.batch_size < 1:
        raise ParityError(f"--batch-size {config.batch_size}: must be at least 1")
    session = Session(
        RunConfig(
            model=config.model,
            runtimes=config.runtimes,
            weights=config.weights,
            threads=config.threads,
            rebuild=config.rebuild,
        ),
        progress,
    )
    card = session.card
    # Weights first: a training weights source may write the dataset (digits test split).
    loaded = session.model()
    folder = scan_image_folder(config.data, card.num_classes, class_names(card))
    selected = select_indices(len(folder.images), config.limit)
    indices = shard_indices(selected, config.shard)
    if not indices:
        raise ParityError(
            f"shard {config.shard[0]}/{config.shard[1]} of {len(selected)} images is empty"
            if config.shard
            else f"{config.data}: no images selected"
        )
    variants = [VARIANTS[REFERENCE]] + [
        v for v in resolve_variants(config.runtimes) if not v.reference
    ]
    spec = card.preprocess.replace(layout="NCHW")
    scores = {v.name: VariantScore(v.name) for v in variants}
    device = reference_device(config.device)
    progress(f"torch reference on {device}")
    with contextlib.ExitStack() as stack:
        runners = {}
        for variant in variants:
            try:
                on_module = variant.runs_on == "module"
                source = loaded.module if on_module else session.artifact(variant)
                runner = make_runner(variant, source, config.threads)
                if variant.reference and device != "cpu":
                    runner = variant.runner_class()(
                        variant.name, source, config.threads, device=device, tf32=False
                    )
                stack.enter_context(runner)
            except ParityError:
                raise
            except Exception as exc:  # an exporter or runtime failing is a failed variant
                if variant.reference:
                    raise
                scores[variant.name].error = f"{type(exc).__name__}: {exc}"
                continue
            runners[variant.name] = runner
        progress(f"evaluating {len(indices)} images with {', '.join(runners)}")
        for first in range(0, len(indices), config.batch_size):
            chunk = indices[first : first + config.batch_size]
            images = [folder.images[i] for i in chunk]
            batch = preprocess_batch([image.path for image in images], spec)
            labels = np.array([image.label for image in images])
            names = [image.name for image in images]
            outputs: dict[str, np.ndarray] = {}
            for name, runner in list(runners.items()):
                try:
                    outputs[name] = runner.run(batch, taps=())[OUTPUT].reshape(len(chunk), -1)
                except ParityError:
                    raise
                except Exception as exc:
                    if name == REFERENCE:
                        raise
                    scores[name].error = f"{type(exc).__name__}: {exc}"
                    del runners[name]
                    continue
                scores[name].seconds += runner.last_inference_time
            for name, logits in outputs.items():
                score_batch(scores[name], chunk, names, labels, outputs[REFERENCE], logits)
            on_batch(min(first + config.batch_size, len(indices)), len(indices))
    dataset = {
        "root": str(config.data),
        "sha256": folder.sha256,
        "mapping": folder.mapping,
        "classes": folder.classes,
        "total": len(folder.images),
        "limit": config.limit,
        "selected": len(selected),
    }
    return EvalResult(
        model=card.name,
        weights={"source": loaded.source, "sha256": loaded.sha256},
        preprocess_sha256=card.preprocess.sha256,
        dataset=dataset,
        shard={"k": config.shard[0], "n": config.shard[1]} if config.shard else None,
        indices=list(indices),
        scores=[scores[v.name] for v in variants],
        seconds=time.perf_counter() - start,
    )


# -- merging shards --------------------------------------------------------------------


def merge_results(results: Sequence[EvalResult], sources: Sequence[str]) -> EvalResult:
    """Merge shard results into the result of one unsharded evaluation.

    Every shard must come from the same model, weights, preprocessing, dataset listing,
    selection (limit) and variant list, with the same shard count; together they must
    cover each selected image exactly once. Anything else is an error naming the files.
    """
    if not results:
        raise ParityError("eval-merge: no shard files given")
    first, first_source = results[0], sources[0]

    def identity(result: EvalResult) -> dict[str, Any]:
        return {
            "model": result.model,
            "weights sha256": result.weights.get("sha256"),
            "preprocessing sha256": result.preprocess_sha256,
            "dataset listing sha256": result.dataset.get("sha256"),
            "class mapping": result.dataset.get("classes"),
            "limit": result.dataset.get("limit"),
            "variants": result.variants,
            "shard count": (result.shard or {}).get("n", 1),
        }

    expected = identity(first)
    for result, source in zip(results[1:], sources[1:], strict=True):
        for key, value in identity(result).items():
            if value != expected[key]:
                raise ParityError(
                    f"eval-merge: {source} and {first_source} disagree on {key} "
                    f"({_short(value)} vs {_short(expected[key])}); shards must come from one "
                    "evaluation"
                )
    seen: dict[int, str] = {}
    for result, source in zip(results, sources, strict=True):
        for index in result.indices:
            if index in seen:
                other = seen[index]
                overlap = [i for i in result.indices if seen.get(i) == other]
                raise ParityError(
                    f"eval-merge: {source} and {other} overlap on {len(overlap)} images "
                    f"(indices {overlap[:5]}...); is a shard given twice?"
                )
            seen[index] = source
    selected = select_indices(int(first.dataset["total"]), first.dataset.get("limit"))
    missing = sorted(set(selected) - set(seen))
    extra = sorted(set(seen) - set(selected))
    if missing or extra:
        n = expected["shard count"]
        present = sorted({(r.shard or {}).get("k", 0) for r in results})
        absent = [k for k in range(n) if k not in present]
        raise ParityError(
            f"eval-merge: the shards miss {len(missing)} of {len(selected)} images"
            + (f" (shards {', '.join(f'{k}/{n}' for k in absent)} not given)" if absent else "")
            + (f"; {len(extra)} indices are outside the selection" if extra else "")
        )
    scores = []
    for name in first.variants:
        parts = [r.score(name) for r in results]
        merged = VariantScore(name)
        for part in parts:
            merged.images += part.images
            merged.correct += part.correct
            merged.agree += part.agree
            merged.flips.extend(part.flips)
            merged.seconds += part.seconds
            merged.error = merged.error or part.error
        merged.flips.sort(key=lambda flip: flip["index"])
        scores.append(merged)
    return EvalResult(
        model=first.model,
        weights=first.weights,
        preprocess_sha256=first.preprocess_sha256,
        dataset=first.dataset,
        shard=None,
        indices=sorted(seen),
        scores=scores,
        seconds=sum(r.seconds for r in results),
    )


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


# -- display ---------------------------------------------------------------------------


def print_eval(result: EvalResult, console: Any, max_flips: int = 10) -> None:
    """The accuracy/agreement table, then each variant's flips (largest torch margin first)."""
    from rich.markup import escape
    from rich.table import Table

    dataset = result.dataset
    names = {index: folder for folder, index in dataset.get("classes", {}).items()}
    what = f"{len(result.indices)} of {dataset['total']} images"
    if dataset.get("limit") is not None:
        what += f" (--limit {dataset['limit']})"
    if result.shard:
        what += f" (shard {result.shard['k']}/{result.shard['n']})"
    console.print(
        f"[bold]{result.model}[/] on {escape(str(dataset['root']))}: {what}; classes by "
        f"{dataset['mapping']}; weights {escape(result.weights['source'])} "
        f"({result.weights['sha256'][:12]})"
    )
    reference = result.scores[0]
    table = Table(title="dataset-level parity vs torch", title_justify="left")
    width = max(len(s.name) for s in result.scores)
    table.add_column("variant", no_wrap=True, min_width=width)
    for column in ("images", "accuracy", "Δ vs torch", "top-1 agreement", "flips", "images/s"):
        table.add_column(column, justify="right")
    table.add_column("status")
    for score in result.scores:
        drop = (score.accuracy - reference.accuracy) * 100
        status = f"[red]{escape(score.error)}[/]" if score.error else "[green]ok[/]"
        table.add_row(
            score.name,
            str(score.images),
            f"{score.accuracy:.2%}",
            "—" if score is reference else f"{drop:+.2f} pp",
            f"{score.agreement:.2%}",
            str(len(score.flips)),
            f"{score.images_per_s:.1f}",
            status,
        )
    console.print(table)
    for score in result.scores:
        if not score.flips or max_flips <= 0:
            continue
        flips = sorted(score.flips, key=lambda f: (-f["margin"], f["index"]))
        shown = Table(
            title=f"{score.name}: {len(flips)} flips vs torch (largest torch margin first)",
            title_justify="left",
        )
        shown.add_column("image", no_wrap=True, min_width=max(len(f["path"]) for f in flips))
        for column in ("label", "torch", score.name, "torch margin", "runtime margin"):
            shown.add_column(column, justify="right")
        for flip in flips[:max_flips]:
            shown.add_row(
                escape(flip["path"]),
                *(escape(str(names.get(flip[k], flip[k]))) for k in ("label", "torch", "runtime")),
                f"{flip['margin']:.3g}",
                f"{flip['runtime_margin']:.3g}",
            )
        if len(flips) > max_flips:
            shown.caption = f"... and {len(flips) - max_flips} more (all in --json)"
        console.print(shown)
