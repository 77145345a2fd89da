"""The evaluation's result: per-variant counts and flips, JSON round-trips, shard merging."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity import atomic
from parity.errors import ParityError
from parity.evaluate.dataset import select_indices

#: JSON format of an evaluation result (bump on incompatible changes).
FORMAT = 1
KIND = "parity-eval"


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
    #: why the variant does not apply here (``n/a``: not run, not a failure).
    not_applicable: str | None = None

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

    def absorb(self, part: VariantScore) -> None:
        """Add the counts, flips, time and first error of ``part`` (other images of the
        same variant: a shard, a batch); flips stay in index order."""
        self.images += part.images
        self.correct += part.correct
        self.agree += part.agree
        self.flips.extend(part.flips)
        self.flips.sort(key=lambda flip: flip["index"])
        self.seconds += part.seconds
        self.error = self.error or part.error
        self.not_applicable = self.not_applicable or part.not_applicable

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
            "not_applicable": self.not_applicable,
            "seconds": round(self.seconds, 3),
            "images_per_s": round(self.images_per_s, 1),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VariantScore:
        return cls(
            data["name"], int(data["images"]), int(data["correct"]), int(data["agree"]),
            list(data["flips"]), data.get("error"), float(data.get("seconds", 0.0)),
            data.get("not_applicable"),
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
            merged.absorb(part)
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
