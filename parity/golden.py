"""The golden store: torch reference outputs with provenance, as committed files.

Layout, per model::

    fixtures/goldens/<model>/provenance.json   versions, weights/spec/input hashes, taps
    fixtures/goldens/<model>/<fixture>.npz     one file per fixture image

What is stored per tap (in full, or as a sketch) is :mod:`parity.golden_record`.

An update is a transaction (:mod:`parity.transaction`): the whole new set (every npz and
provenance.json, which records each npz's sha256) is written to a staging folder and
swapped in with one rename, under a lock; an interrupted update leaves the old set.
A golden whose weights, preprocessing, taps or input differ from the current run is a
:class:`StaleGoldenError` that says what changed, never a silent regeneration. What a
failing variant obtained is written to the cache (``<cache>/obtained/<model>/``), never
into the goldens' folder.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity import __version__, atomic
from parity.compare import TapMetrics, TapVerdict, VariantVerdict, judge, worst_of
from parity.errors import ParityError
from parity.fixtures import Fixture, file_sha256
from parity.golden_record import COUNT_SKETCH, FULL_LIMIT, SAMPLE, TapRecord
from parity.paths import cache_dir, in_installed_package
from parity.preprocess import PreprocessSpec, tensor_sha256
from parity.taps import Tap
from parity.tolerances import TolerancePolicy
from parity.transaction import recover, replace_folder

FORMAT = 2
OUTPUT_KEY = "output"


class StaleGoldenError(ParityError):
    """The golden was made from different weights, preprocessing or inputs."""


class MissingGoldenError(ParityError):
    """No golden exists yet for a model or fixture."""


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


_IMAGE_KEYS = ("file", "file_sha256", "input_sha256", "npz_sha256")


def _provenance_problem(data: Any) -> str | None:
    """What is structurally wrong with a provenance.json, or ``None``."""
    if not isinstance(data, dict):
        return "not a JSON object"
    shapes: list[tuple[str, Any, type]] = [
        ("format", data.get("format"), int),
        ("versions", data.get("versions"), dict),
        ("weights", data.get("weights"), dict),
        ("preprocess", data.get("preprocess"), dict),
        ("taps", data.get("taps"), list),
        ("images", data.get("images"), dict),
    ]
    for key, value, kind in shapes:
        if not isinstance(value, kind):
            return f"'{key}' missing or not a {kind.__name__}"
    if not isinstance(data["weights"].get("sha256"), str):
        return "'weights.sha256' missing"
    if not isinstance(data["preprocess"].get("sha256"), str) or not isinstance(
        data["preprocess"].get("spec"), dict
    ):
        return "'preprocess.sha256' or 'preprocess.spec' missing"
    if not all(isinstance(t, dict) and isinstance(t.get("name"), str) for t in data["taps"]):
        return "a 'taps' entry has no name"
    for name, entry in data["images"].items():
        if not isinstance(entry, dict) or not all(
            isinstance(entry.get(k), str) for k in _IMAGE_KEYS
        ):
            return f"image '{name}' lacks one of {list(_IMAGE_KEYS)}"
    return None


@dataclasses.dataclass
class Provenance:
    """Where a model's goldens came from (``provenance.json``)."""

    data: dict[str, Any]

    @property
    def images(self) -> dict[str, dict[str, str]]:
        images: dict[str, dict[str, str]] = self.data["images"]
        return images

    @property
    def weights_sha256(self) -> str:
        return str(self.data["weights"]["sha256"])

    @property
    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.data["preprocess"]["spec"]
        return spec


class GoldenStore:
    """The goldens of one model, in ``root/<model>/``."""

    def __init__(self, root: Path, model: str) -> None:
        self.folder = Path(root) / model
        self.model = model

    @property
    def provenance_path(self) -> Path:
        return self.folder / "provenance.json"

    def npz_path(self, fixture: str) -> Path:
        return self.folder / f"{fixture}.npz"

    def obtained_path(self, fixture: str, variant: str) -> Path:
        """Where a failing variant's arrays for one image go: the cache, not the goldens."""
        return cache_dir() / "obtained" / self.model / variant / f"{fixture}.npz"

    def exists(self) -> bool:
        recover(self.folder)
        return self.provenance_path.is_file()

    def provenance(self) -> Provenance:
        if not self.exists():
            raise MissingGoldenError(
                f"{self.provenance_path}: no goldens for {self.model}; create them with "
                f"`parity update-goldens --model {self.model}`"
            )
        try:
            data = json.loads(self.provenance_path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ParityError(f"{self.provenance_path}: not valid JSON ({exc})") from None
        except OSError as exc:
            raise ParityError(f"{self.provenance_path}: cannot read ({exc.strerror})") from None
        problem = _provenance_problem(data)
        if problem:
            raise ParityError(
                f"{self.provenance_path}: malformed provenance ({problem}); restore it from "
                f"version control or run `parity update-goldens --model {self.model}`"
            )
        return Provenance(data)

    def write(
        self,
        fixtures: Sequence[Fixture],
        batch: np.ndarray,
        outputs: Mapping[str, np.ndarray],
        taps: Sequence[Tap],
        *,
        weights_source: str,
        weights_sha256: str,
        spec: PreprocessSpec,
        versions: Mapping[str, str],
    ) -> None:
        """Replace the whole set (every fixture's npz and the provenance) in one step."""
        if in_installed_package(self.folder):
            raise ParityError(
                f"{self.folder}: goldens bundled in the installed parity package are read-only; "
                "update them in a project (`parity init` makes one; its goldens go to "
                "parity/goldens)"
            )
        with replace_folder(self.folder) as folder:
            images = {}
            for index, fixture in enumerate(fixtures):
                arrays = {OUTPUT_KEY + "/full": np.asarray(outputs[OUTPUT_KEY][index], np.float32)}
                for tap in taps:
                    arrays.update(TapRecord.of(outputs[tap.name][index]).to_arrays(tap.name))
                data = _npz_bytes(arrays)
                (folder / self.npz_path(fixture.name).name).write_bytes(data)
                images[fixture.name] = {
                    "file": fixture.path.name,
                    "file_sha256": fixture.sha256 or file_sha256(fixture.path),
                    "input_sha256": tensor_sha256(batch[index]),
                    "npz_sha256": hashlib.sha256(data).hexdigest(),
                }
            provenance = {
                "format": FORMAT,
                "model": self.model,
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "parity_version": __version__,
                "versions": dict(versions),
                "weights": {"source": weights_source, "sha256": weights_sha256},
                "preprocess": {"spec": spec.to_dict(), "sha256": spec.sha256},
                "sketch": {
                    "full_limit": FULL_LIMIT,
                    "sample": SAMPLE,
                    "count_sketch": COUNT_SKETCH,
                },
                "taps": [
                    {
                        **tap.to_dict(),
                        "shape": list(outputs[tap.name].shape[1:]),
                        "dtype": str(outputs[tap.name].dtype),
                        "stored": "full" if outputs[tap.name][0].size <= FULL_LIMIT else "sketch",
                    }
                    for tap in taps
                ],
                "images": images,
            }
            text = json.dumps(provenance, indent=2, sort_keys=True) + "\n"
            (folder / self.provenance_path.name).write_text(text, encoding="utf-8")

    def check_fresh(
        self,
        fixtures: Sequence[Fixture],
        batch: np.ndarray,
        spec: PreprocessSpec,
        weights_sha256: Callable[[], str | None],
        taps: Sequence[Tap] = (),
    ) -> Provenance:
        """Raise :class:`StaleGoldenError` saying what changed; return the provenance.

        ``weights_sha256`` is called only once the cheaper checks pass (computing it may
        mean calibrating weights); it returns ``None`` where the weights cannot be known.
        """
        provenance = self.provenance()
        where = str(self.provenance_path)
        fix = f"if the change is intended: parity update-goldens --model {self.model}"
        if provenance.data.get("format") != FORMAT:
            raise StaleGoldenError(
                f"{where}: golden format {provenance.data.get('format')}, this parity reads "
                f"format {FORMAT} (the sketch changed); parity update-goldens --model {self.model}"
            )
        if provenance.data["preprocess"]["sha256"] != spec.sha256:
            old, new = provenance.spec, spec.to_dict()
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
            raise StaleGoldenError(f"{where}: preprocessing changed ({details}); {fix}")
        stored = {t["name"] for t in provenance.data["taps"]}
        missing = [t.name for t in taps if t.name not in stored]
        if missing:
            raise StaleGoldenError(
                f"{where}: the goldens have no tap {missing[0]!r} (the card gained "
                f"{len(missing)} tap(s) since they were made); {fix}"
            )
        weights = weights_sha256()
        if weights is not None and provenance.weights_sha256 != weights:
            raise StaleGoldenError(
                f"{where}: weights changed (sha256 {provenance.weights_sha256[:12]} in the golden, "
                f"{weights[:12]} now); {fix}"
            )
        for index, fixture in enumerate(fixtures):
            entry = provenance.images.get(fixture.name)
            if entry is None:
                raise MissingGoldenError(f"{where}: no golden for fixture '{fixture.name}'; {fix}")
            if entry["input_sha256"] != tensor_sha256(batch[index]):
                what = (
                    "the image file changed"
                    if entry["file_sha256"] != (fixture.sha256 or file_sha256(fixture.path))
                    else "the decoded input changed with the same file and spec (image decoder / "
                    "Pillow version?)"
                )
                raise StaleGoldenError(
                    f"{where}: input tensor of '{fixture.name}' differs from the golden's: "
                    f"{what}; {fix}"
                )
            npz = self.npz_path(fixture.name)
            if not npz.is_file() or file_sha256(npz) != entry["npz_sha256"]:
                raise StaleGoldenError(
                    f"{npz}: golden file missing or modified (sha256 differs from "
                    "provenance.json); restore it from version control or regenerate deliberately"
                )
        return provenance

    def load(self, fixture: str) -> dict[str, np.ndarray]:
        with np.load(self.npz_path(fixture), allow_pickle=False) as data:
            return {key: data[key] for key in data.files}

    def record(self, fixture: str, tap: str) -> TapRecord:
        """One tap of one image's golden, or one line naming the file that lacks it."""
        try:
            return TapRecord.from_arrays(self.load(fixture), tap)
        except KeyError as exc:
            raise ParityError(
                f"{self.npz_path(fixture)}: no array {exc} for tap '{tap}' (an incomplete "
                f"golden); regenerate it: parity update-goldens --model {self.model}"
            ) from None

    def write_obtained(
        self, fixture: str, variant: str, outputs: Mapping[str, np.ndarray], index: int
    ) -> Path:
        """Save what a failing variant produced for one image, in full, in the cache."""
        path = self.obtained_path(fixture, variant)
        arrays = {key: np.asarray(value[index]) for key, value in outputs.items()}
        atomic.write_bytes(path, _npz_bytes(arrays))
        return path


def golden_verdict(
    model: str,
    variant: str,
    taps: Sequence[Tap],
    store: GoldenStore,
    fixture: str,
    obtained: Mapping[str, np.ndarray],
    policy: TolerancePolicy,
) -> VariantVerdict:
    """One image's taps (no batch axis) judged against its golden records."""
    arrays = store.load(fixture)
    verdicts = []
    for tap in taps:
        record = TapRecord.from_arrays(arrays, tap.name)
        metrics = record.compare(obtained[tap.name], logits=tap.is_logits)
        budget = policy.budget(model, variant, tap.name)
        verdicts.append(TapVerdict(tap, metrics, budget, judge(metrics, budget)))
    return VariantVerdict(variant, tuple(verdicts))


@dataclasses.dataclass(frozen=True)
class GoldenMoves:
    """What an update would change: provenance lines and per-tap movement."""

    exists: bool
    changes: tuple[str, ...]
    #: tap name -> worst metrics of the new reference against the old golden.
    taps: Mapping[str, TapMetrics]


def golden_moves(
    store: GoldenStore,
    fixtures: Sequence[Fixture],
    batch: np.ndarray,
    reference: Mapping[str, np.ndarray],
    taps: Sequence[Tap],
    *,
    weights_sha256: str,
    spec: PreprocessSpec,
    versions: Mapping[str, str],
) -> GoldenMoves:
    """Compare a new torch reference with the stored goldens, before overwriting them."""
    if not store.exists():
        return GoldenMoves(False, ("new goldens",), {})
    old = store.provenance()
    changes = [
        f"{name} {old.data['versions'].get(name)} -> {version}"
        for name, version in versions.items()
        if old.data["versions"].get(name) != version
    ]
    if old.weights_sha256 != weights_sha256:
        changes.append(f"weights sha256 {old.weights_sha256[:12]} -> {weights_sha256[:12]}")
    new_spec = spec.to_dict()
    changes += [
        f"preprocess {key}: {old.spec.get(key)!r} -> {new_spec.get(key)!r}"
        for key in sorted(set(old.spec) | set(new_spec))
        if old.spec.get(key) != new_spec.get(key)
    ]
    names = [f.name for f in fixtures]
    changes += [f"fixture removed: {n}" for n in sorted(set(old.images) - set(names))]
    changes += [f"fixture added: {n}" for n in names if n not in old.images]
    changes += [
        f"input changed: {f.name}"
        for index, f in enumerate(fixtures)
        if f.name in old.images
        and old.images[f.name]["input_sha256"] != tensor_sha256(batch[index])
    ]
    old_taps = {t["name"] for t in old.data["taps"]}
    changes += [f"tap added: {t.name}" for t in taps if t.name not in old_taps]
    moved: dict[str, TapMetrics] = {}
    for tap in (t for t in taps if t.name in old_taps):
        per_image = []
        for index, fixture in enumerate(fixtures):
            if fixture.name in old.images and store.npz_path(fixture.name).is_file():
                record = store.record(fixture.name, tap.name)
                if record.shape == tuple(reference[tap.name].shape[1:]):
                    per_image.append(record.compare(reference[tap.name][index], tap.is_logits))
        if per_image:
            moved[tap.name] = worst_of(per_image)
    return GoldenMoves(True, tuple(changes), moved)
