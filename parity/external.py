"""Check an artifact made elsewhere: an ONNX, TFLite or Keras file parity did not export.

``parity run --artifact model.onnx`` (or :func:`check_artifact` in a test) runs the
card's fixtures through a file someone else produced and judges it against the torch
reference with the same budgets, the same :func:`~parity.compare.compare_taps` and the
same "first divergent tap" explanation as the built-in variants. parity knows nothing
about how the file was made, so it reads what it can from the file itself and says what
it read (``detected: ...`` lines, shown in the console and stored in the JSON report):

* **runtime**, from the magic bytes (TFLite's ``TFL3`` identifier at byte 4, the zip
  header of a ``.keras`` file, the protobuf tag of ``ModelProto.ir_version`` at byte 0),
  cross-checked with the suffix and ``--artifact-runtime``;
* **input**: its name, dtype, quantisation (TFLite int8: scale and zero point, used to
  quantise the float batch), batch dimension (dynamic: one run; fixed: runs of that
  size) and **layout**: the axis holding the card's 3 channels, with the card's
  height x width on the other two. A layout adapter right after the input (a Transpose
  or Keras Permute added by a converter) is reported and checked against the layout the
  runtime's ops use. When axis 1 and axis 3 cannot be told apart (a 3x3 input with 3
  channels, or both dynamic), parity refuses to guess and asks for ``--input-layout``;
* **output**: the one output of shape (batch, num_classes); its values are the logits,
  always compared (top-1 agreement, top-5 overlap).

Intermediate taps are compared only where they can be located honestly:

1. **explicit**: a tap map file (TOML or JSON, ``tap = "tensor"`` or
   ``tap = {tensor = "...", layout = "NHWC"}``, optionally under a ``[taps]`` table);
2. **automatically, by shape and graph order** (the tap map's entries are anchors).
   One run of the file on the first image exposes every tensor (ONNX: all values added
   as graph outputs; TFLite: ``experimental_preserve_all_tensors``, int8 dequantised;
   Keras: every layer output). Candidates for a tap are the tensors on the main path (a
   tensor that is the only live activation at its point of the graph, as every module
   output of a chain is; tensors inside a residual branch are not) whose shape equals
   the reference tap's in NCHW or NHWC. Taps and candidates must appear in the same
   order, so for each tap parity computes the earliest and the latest candidate any
   in-order assignment could give it; when both are the same tensor the tap is matched
   (``shape-unique`` if it is the only tensor of that shape after the previous match,
   ``shape-order`` if the taps that follow need the other ones). Values play no part.
3. Where several candidates remain, their values on the first image are compared with
   the reference **as evidence only**: the tap is matched (``numeric``) when exactly one
   candidate is within the tap's ``max_abs_norm`` budget and every other one is more
   than :data:`CLEAR_MARGIN` times over it; otherwise it is reported as unmatched,
   with the numbers. A value-based pairing cannot pair a tap that diverges, so it is
   used last, and the verdict never depends on a tap it could not place.

Unmatched taps are listed with their reason and left out of the verdict; the report says
how many taps were compared and how each was located.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from parity import lazy
from parity.backends import Variant, backend
from parity.compare import compare_taps, merge_verdicts
from parity.detect import Detection, Probe, detect, format_shape
from parity.errors import ParityError, RuntimeFailure
from parity.exported import Artifact
from parity.fixtures import file_sha256
from parity.golden import golden_verdict
from parity.preprocess import Layout, to_layout
from parity.readers import external_variant, sniff_runtime
from parity.runner import OUTPUT, Runner
from parity.tapmatch import TapMapEntry, TapMatch, load_tap_map, match_summary, match_taps
from parity.taps import Tap
from parity.zoo import DEFAULT_MODEL

if TYPE_CHECKING:
    from parity.compare import VariantVerdict
    from parity.harness import Session
    from parity.result import VariantResult

#: Name of the pseudo-tap that fetches the chosen output when it is not the runner's own.
_OUTPUT_TAP = "__output__"


# -- running ---------------------------------------------------------------------------


class ExternalRunner(Runner):
    """Wraps a runtime's runner: per-tap layouts, fixed batch sizes, the chosen output.

    The inner runner feeds its declared input layout and returns taps as the file has
    them; this converts each tap by the layout its match declared (never by shape).
    """

    input_layout = "NCHW"
    tap_layout = "NCHW"

    def __init__(
        self,
        name: str,
        inner: Runner,
        tap_layouts: Mapping[str, Layout | None],
        batch: int | None,
        logits: Sequence[str],
        output_tap: bool,
    ) -> None:
        super().__init__(name)
        self.inner = inner
        self.tap_layouts = dict(tap_layouts)
        self.batch = batch
        self.logits = tuple(logits)
        self.output_tap = output_tap

    def _activate(self) -> None:
        self.inner.activate()

    def _deactivate(self) -> None:
        self.inner.deactivate()

    def _run(self, feed: np.ndarray, taps: Sequence[Tap]) -> dict[str, np.ndarray]:
        inner_taps = [t for t in taps if t.name not in self.logits]
        if self.output_tap:
            inner_taps.append(Tap(_OUTPUT_TAP, ""))
        size = self.batch or len(feed)
        padded = -len(feed) % size
        if padded:
            feed = np.concatenate([feed, np.zeros((padded, *feed.shape[1:]), feed.dtype)])
        parts = [self.inner.run(feed[i : i + size], inner_taps) for i in range(0, len(feed), size)]
        merged = {k: np.concatenate([p[k] for p in parts])[: len(feed) - padded] for k in parts[0]}
        result = {OUTPUT: merged.pop(_OUTPUT_TAP) if self.output_tap else merged[OUTPUT]}
        for tap in inner_taps:
            if tap.name != _OUTPUT_TAP:
                layout = self.tap_layouts.get(tap.name) or "NCHW"
                result[tap.name] = to_layout(merged[tap.name], layout, "NCHW")
        for name in self.logits:
            result[name] = result[OUTPUT]
        return result


@dataclasses.dataclass(frozen=True)
class Inspection:
    """A file made elsewhere, opened and read (no image run yet)."""

    probe: Probe
    detection: Detection
    explicit: Mapping[str, TapMapEntry]
    variant: Variant

    def artifact(self, lines: Sequence[str], matches: Sequence[TapMatch] = ()) -> Artifact:
        """The report's view of the file: hash, size, what was detected, how taps matched."""
        path = self.detection.path
        sha256 = file_sha256(path)
        notes = list(lines)
        if matches:
            notes.append(match_summary(matches))
            notes += [
                f"  {m.tap}: {m.how}: {m.evidence}" for m in matches if m.how != "final output"
            ]
        metadata: dict[str, Any] = {
            "exporter": "made elsewhere",
            "runtime": self.detection.runtime,
            "format": self.detection.format,
            "bytes": path.stat().st_size,
            "sha256": sha256,
            "input_layout": self.detection.layout,
            "batch": self.detection.batch,
            "detected": list(lines),
            "tap_summary": match_summary(matches) if matches else None,
            "tap_matching": [m.to_dict() for m in matches],
            "notes": notes,
        }
        return Artifact("external", path, sha256[:20], metadata, built=False)


@dataclasses.dataclass(frozen=True)
class ExternalPlan:
    """An inspected file with its taps located, ready to run on the fixtures."""

    inspection: Inspection
    matches: tuple[TapMatch, ...]
    artifact: Artifact
    runner: ExternalRunner

    @property
    def detection(self) -> Detection:
        return self.inspection.detection

    @property
    def variant(self) -> Variant:
        return self.inspection.variant

    @property
    def compared(self) -> list[str]:
        return [m.tap for m in self.matches if m.tensor is not None]


def inspect_artifact(
    session: Session,
    path: Path | str,
    runtime: str | None = None,
    tap_map: Path | str | None = None,
    input_layout: str | None = None,
) -> Inspection:
    """Open the file and read what it says about itself; one-line ParityError on bad input."""
    path = Path(path)
    runtime, what = sniff_runtime(path, runtime)
    reader = backend(runtime)
    lazy.require(reader.module)
    probe = reader.probe_class()(path, session.config.threads)
    probe.load()
    detection = detect(probe, session.card, what, input_layout)
    explicit = load_tap_map(Path(tap_map), session.taps) if tap_map is not None else {}
    return Inspection(probe, detection, explicit, external_variant(path, runtime, what))


def locate(session: Session, inspection: Inspection) -> ExternalPlan:
    """Run the first image once with every tensor exposed; locate the taps; build the runner.

    Exceptions from the runtime itself propagate (the caller makes them a failed result).
    """
    probe, detection, variant = inspection.probe, inspection.detection, inspection.variant
    path = detection.path
    session.progress(f"running {path.name} once with every tensor exposed, to locate the taps")
    reference = session.reference
    feed = to_layout(session.batch[:1], "NCHW", detection.layout)
    runs = detection.batch or 1
    if runs > 1:  # a fixed batch: the first image, padded with zeros
        feed = np.concatenate([feed, np.zeros((runs - 1, *feed.shape[1:]), feed.dtype)])
    output, tensors, keys = probe.discover(feed, detection.output.name)
    output = output[:1]
    for tensor in tensors:  # keep the first image only
        if tensor.shape and tensor.shape[0] == runs:
            tensor.shape, tensor.value = (1, *tensor.shape[1:]), tensor.value[:1]
    classes = session.card.num_classes
    if output.shape != (1, classes):
        raise ParityError(
            f"{path}: output '{detection.output.name}' gives shape {format_shape(output.shape)} "
            f"for one image; model card '{session.card.name}' has {classes} classes"
        )
    lines = list(detection.lines)
    if (output >= 0).all() and np.allclose(output.sum(axis=1), 1.0, atol=1e-3):
        lines.append(
            "detected: WARNING the output sums to 1 per image: probabilities (softmax inside "
            "the file), not logits; the logits tap will not match torch"
        )
    policy = session.policy

    def budget(tap: str) -> float | None:
        return policy.budget(session.card.name, variant.name, tap).limits.get("max_abs_norm")

    shapes = {t.name: tuple(reference[t.name].shape[1:]) for t in session.taps}
    named = probe.module_anchors(session.taps, tensors, shapes)  # names a converter wrote
    matches = match_taps(
        session.taps,
        reference,
        tensors,
        keys,
        {**named, **inspection.explicit},
        budget,
        probe.native_layout,
        detection.output.name,
        session.fixtures[0].name,
    )
    matches = [
        dataclasses.replace(m, how="module path", evidence=m.evidence.replace("tap map", "name"))
        if m.how == "explicit" and m.tap in named and m.tap not in inspection.explicit
        else m
        for m in matches
    ]
    fetch = {m.tap: cast(str, m.tensor) for m in matches if m.tensor and m.how != "final output"}
    output_tap = probe.runtime == "onnxruntime" and probe.outputs()[0].name != detection.output.name
    if output_tap:
        fetch[_OUTPUT_TAP] = detection.output.name
    runner = ExternalRunner(
        variant.name,
        probe.runner(variant.name, fetch, detection),
        {m.tap: m.layout for m in matches},
        detection.batch,
        [m.tap for m in matches if m.how == "final output"],
        output_tap,
    )
    return ExternalPlan(inspection, tuple(matches), inspection.artifact(lines, matches), runner)


def plan_external(
    session: Session,
    path: Path | str,
    runtime: str | None = None,
    tap_map: Path | str | None = None,
    input_layout: str | None = None,
) -> ExternalPlan:
    """Inspect and locate in one call (for exploring a file: which taps match, and how)."""
    return locate(session, inspect_artifact(session, path, runtime, tap_map, input_layout))


def check_external(
    session: Session,
    path: Path | str,
    runtime: str | None = None,
    tap_map: Path | str | None = None,
    input_layout: str | None = None,
    golden: bool = False,
) -> list[VariantResult]:
    """Live check of a file made elsewhere against the torch reference of ``session``, and
    with ``golden`` also against the stored goldens (as built-in variants are; the taps are
    located with the reference, so torch is needed either way).

    Bad input (not a model, wrong classes, wrong input size, ambiguous layout, a bad tap
    map) raises a one-line :class:`ParityError` before anything runs; the runtime failing
    on the file is a failed result, as for built-in artifacts.
    """
    from parity.result import VariantResult

    modes = ("live", "golden") if golden else ("live",)
    inspection = inspect_artifact(session, path, runtime, tap_map, input_layout)
    _ = session.reference  # the torch reference is not part of the artifact's time
    start = time.perf_counter()
    try:
        plan = locate(session, inspection)
        taps = [t for t in session.taps if t.name in plan.compared]
        session.progress(f"running {plan.variant.name} on {len(session.fixtures)} images")
        with plan.runner as runner:
            obtained = runner.run(session.batch, taps)
    except RuntimeFailure as exc:  # a runtime failing on its artifact is a failed check
        artifact = inspection.artifact(inspection.detection.lines)
        seconds = time.perf_counter() - start
        return [
            VariantResult.failed_to_run(inspection.variant, str(exc), m, artifact, seconds)
            for m in modes
        ]
    name, seconds = plan.variant.name, time.perf_counter() - start
    verdict = compare_taps(
        session.card.name, name, taps, session.reference, obtained, session.policy
    )
    located = {m.tap: m.tensor for m in plan.matches if m.tensor is not None}
    results = [VariantResult(plan.variant, verdict, plan.artifact, seconds, located=located)]
    if golden:
        results.append(
            VariantResult(
                plan.variant, _vs_goldens(session, name, taps, obtained), plan.artifact,
                seconds, mode="golden", located=located,
            )
        )  # fmt: skip
    return results


def _vs_goldens(
    session: Session, name: str, taps: Sequence[Tap], obtained: Mapping[str, np.ndarray]
) -> VariantVerdict:
    """The file's taps judged against the stored goldens, image by image (the parent
    checked them fresh); what a failing image obtained is saved as for built-in variants."""
    store = session.golden_store()
    verdicts = []
    for index, fixture in enumerate(session.fixtures):
        single = {k: v[index] for k, v in obtained.items()}
        verdict = golden_verdict(
            session.card.name, name, taps, store, fixture.name, single, session.policy
        )
        if not verdict.passed:
            store.write_obtained(fixture.name, name, obtained, index)
        verdicts.append(verdict)
    return merge_verdicts(verdicts, session.policy, session.card.name)


def check_artifact(
    path: Path | str,
    model: str = DEFAULT_MODEL,
    *,
    runtime: str | None = None,
    tap_map: Path | str | None = None,
    input_layout: str | None = None,
    session: Session | None = None,
    tolerances: Path | None = None,
) -> VariantResult:
    """pytest-friendly: check one file made elsewhere; pass ``session`` to share a reference.

    The file is loaded and run in its runtime's worker process (the torch reference in
    torch's), as ``parity run --artifact`` does: this process imports no framework.
    """
    from parity.harness import RunConfig, Session

    if session is None:
        session = Session(RunConfig(model=model, tolerances=tolerances))
    runtime, _what = sniff_runtime(Path(path), runtime)
    external = {
        "path": str(path), "runtime": runtime, "input_layout": input_layout,
        "tap_map": str(tap_map) if tap_map is not None else None,
    }  # fmt: skip
    session.prefetch([], external)
    return session.external[0]


def assert_artifact_parity(path: Path | str, model: str = DEFAULT_MODEL, **kwargs: Any) -> None:
    """Fail (AssertionError) with the first divergent tap unless every compared tap passes."""
    result = check_artifact(path, model, **kwargs)
    if result.error is not None:
        raise AssertionError(f"{path}: {result.error}")
    assert result.verdict is not None
    assert result.passed, f"{path}: {result.verdict.explain()}"
