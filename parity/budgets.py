"""``parity budgets``: measure a model's noise floor per precision class and write rules.

The method of ``bench/noise_floor.py``, run in worker processes as ``parity run`` runs
(this process imports no framework): every applicable variant chosen runs the fixtures
against the torch reference, fp32-class variants at 1 and 2 threads. Runs are grouped by
the precision class each variant declares (:data:`parity.backends.PRECISION_CLASSES`) and
never pooled: a bf16 run is never part of an fp32 floor.

Each class gets one rule per tap, ``model/*/tap`` with ``precision = [class]`` and
``variants = [...]`` (the variants measured: an unmeasured variant is never judged by it):

* fp32: ``max_abs_norm`` 5x the worst run at that tap (at least :data:`FP32_MIN`),
  ``1 - min_cosine`` 30x. Refused
  (:class:`LooseBudget`, exit 2) where that is above :data:`LOOSE_FACTOR` x the class's
  floor at the tap (the median of its runs: one variant far off the others is a fault to
  fix, not noise to budget) or above :data:`FP32_CEILING`, unless ``allow_loose`` (then
  recorded in the rule's note).
* other classes: 2.5x the error, 3 dB under the SQNR, a cosine budget that can fail, top-1 /
  top-5 one image under the measurement (logits).
Every written value is valid for :data:`parity.tolerances.BUDGET_SCHEMA`.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
import re
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

from parity import atomic
from parity.artifacts import package_version
from parity.compare import TapMetrics
from parity.errors import ParityError, RuntimeFailure, ToleranceError
from parity.plan import plan
from parity.runconfig import RunConfig
from parity.session import Session
from parity.tolerances import TolerancePolicy
from parity.variants import Variant, resolve_variants
from parity.zoo import get_card

FP32_FACTOR, COSINE_FACTOR, QUANT_FACTOR, SQNR_MARGIN_DB = 5.0, 30.0, 2.5, 3.0
#: An fp32 budget above this multiple of the class's floor (median run) at a tap is refused.
LOOSE_FACTOR = 50.0
#: No fp32 budget above 1% of a tap's scale: past that it is not fp32 rounding noise.
FP32_CEILING = 1e-2
#: No fp32 budget under this: kernels of other ISAs sum in another order (AVX-512 vs AVX2),
#: and an early tap's floor here (mobilenet_v2 stem 6e-7) says little about theirs.
FP32_MIN = 1e-5
#: What ``parity budgets`` measures when no ``--runtime`` is given: every family but CUDA.
DEFAULT_SELECTORS = ("onnxruntime", "keras", "litert", "openvino", "torch_cpu")
_VERSIONS = ("torch", "onnxruntime", "tensorflow-cpu", "ai-edge-litert", "openvino")
_BEGIN = "# -- parity budgets: {model} (begin) --"
_END = "# -- parity budgets: {model} (end) --"

Progress = Callable[[str], None]


class LooseBudget(ParityError):
    """An fp32 budget would be far above the measured floor (``--allow-loose`` to write it)."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One variant at one thread count: its metrics per tap (forward order)."""

    name: str
    variant: str
    metrics: dict[str, TapMetrics]


@dataclasses.dataclass(frozen=True)
class Measurement:
    """What ``parity budgets`` measured for one model: runs by precision class."""

    model: str
    images: int
    weights: str
    taps: tuple[str, ...]
    runs: dict[str, list[Run]]
    skipped: tuple[str, ...] = ()
    #: Variants whose runtime failed (``name: message``): nothing is written then.
    failed: tuple[str, ...] = ()
    #: What each variant ran in, where its runtime said (``openvino_bf16: bf16 emulated``).
    executed: dict[str, str] = dataclasses.field(default_factory=dict)


def _ceil1(value: float) -> float:
    """``value`` rounded up to one significant digit (a budget reads as 5e-4, not 4.87e-4)."""
    if value <= 0:
        return 0.0
    exponent = math.floor(math.log10(value))
    return float(f"{math.ceil(round(value / 10**exponent, 9)) * 10**exponent:.1g}")


def _measure_pass(
    model: str, variants: Sequence[Variant], threads: int, progress: Progress
) -> tuple[Session, list[Run], list[str], dict[str, str]]:
    """Run ``variants`` in workers at ``threads`` threads each; their runs and failures."""
    # One worker at a time at 2 threads (each gets both); at 1 thread, one per core.
    session = Session(RunConfig(model=model, threads=threads, jobs=1 if threads > 1 else None),
                      progress)  # fmt: skip
    progress(f"measuring {', '.join(v.name for v in variants)} at {threads} thread(s)")
    session.prefetch(variants)
    reference = session.prepared_reference
    runs, failed = [], []
    for variant in variants:
        try:
            obtained, _ = session.outputs(variant)
        except RuntimeFailure as exc:  # a runtime failing on its artifact: nothing is measured
            failed.append(f"{variant.name}: {exc}")
            continue
        metrics = {t.name: reference[t.name].metrics(obtained[t.name]) for t in session.taps}
        runs.append(Run(f"{variant.name}@{threads}t", variant.name, metrics))
        session.forget(variant)
    return session, runs, failed, dict(session.executed)


def measure(
    model: str, selectors: Sequence[str] | None = None, progress: Progress = lambda m: None
) -> Measurement:
    """Run every applicable variant of ``selectors`` (default: every CPU family) against torch."""
    chosen = [v for v in resolve_variants(selectors or DEFAULT_SELECTORS) if not v.reference]
    planned = plan(get_card(model), chosen)
    applicable = list(planned.applicable)
    skipped = tuple(f"{v.name}: {reason}" for v, reason in planned.not_applicable)
    if not applicable:
        raise ParityError(
            f"parity budgets: no variant of {', '.join(selectors or DEFAULT_SELECTORS)} applies "
            f"to {model} here ({'; '.join(skipped)})"
        )
    runs: dict[str, list[Run]] = {}
    failed: list[str] = []
    executed: dict[str, str] = {}
    fp32 = [v for v in applicable if v.precision == "fp32"]
    for threads, variants in ((1, fp32), (2, applicable)):  # the last pass: never empty
        if not variants:
            continue
        session, measured, broken, ran = _measure_pass(model, variants, threads, progress)
        failed += [line for line in broken if line not in failed]
        executed.update(ran)
        for run in measured:
            precision = next(v.precision for v in applicable if v.name == run.variant)
            runs.setdefault(precision, []).append(run)
    return Measurement(
        model=model,
        images=len(session.fixtures),
        weights=session.weights()[1],
        taps=tuple(t.name for t in session.taps),
        runs=runs,
        skipped=skipped,
        failed=tuple(failed),
        executed=executed,
    )


def _worst(runs: Sequence[Run], tap: str) -> TapMetrics:
    return max((r.metrics[tap] for r in runs), key=lambda m: m.max_abs_norm)


def _fp32_tap(m: Measurement, tap: str, allow_loose: bool) -> list[str]:
    runs = m.runs["fp32"]
    errors = {r.name: r.metrics[tap].max_abs_norm for r in runs}
    floor = statistics.median(errors.values())
    worst_run = max(errors, key=lambda name: errors[name])
    budget = max(_ceil1(FP32_FACTOR * errors[worst_run]), FP32_MIN)
    deficit = max(1.0 - min(r.metrics[tap].cosine for r in runs), 0.0)
    cosine_deficit = max(_ceil1(COSINE_FACTOR * deficit), 1e-9)
    limit = min(max(LOOSE_FACTOR * floor, FP32_MIN), FP32_CEILING)
    loose = budget > limit or cosine_deficit >= 1.0
    note = (
        f"fp32 floor (median of {len(runs)} runs) {floor:.2e}, worst {errors[worst_run]:.2e} "
        f"({worst_run}) -> {FP32_FACTOR:g}x (>= {FP32_MIN:g}); 1-cos {deficit:.1e} -> "
        f"{COSINE_FACTOR:g}x"
    )
    if loose and not allow_loose:
        raise LooseBudget(
            f"parity budgets: the fp32 budget for {m.model}/{tap} would be {budget:.0e}, over "
            f"{limit:.0e} ({LOOSE_FACTOR:g}x the class's floor {floor:.1e}, at most "
            f"{FP32_CEILING:g}): {worst_run} measured {errors[worst_run]:.1e}; fix that variant "
            "or measure it alone, or pass --allow-loose to write it anyway"
        )
    lines = [note + ("; LOOSE: written with --allow-loose" if loose else "")]
    lines.append(f"max_abs_norm = {budget:.0e}")
    if cosine_deficit < 1.0:
        lines.append(f"min_cosine = {1.0 - cosine_deficit:.10g}")
    return lines


def _quantised_cosine(cosine: float) -> list[str]:
    """A cosine budget under the measured floor that can still fail (none if the floor is ~0).

    The usual margin (``QUANT_FACTOR`` x the floor's distance from 1) goes to 0 or below on a
    floor like int8 on random weights (cosine 0.45): such a budget could never fail, so half
    the floor is the budget instead.
    """
    loose = 1.0 - _ceil1(QUANT_FACTOR * (1.0 - cosine))
    if loose > 0:
        return [f"min_cosine = {loose:.10g}"]  # .6g made 1 - 4e-7 a budget of 1: never met
    half = math.floor(cosine / 2 * 100) / 100
    return [f"min_cosine = {half:.2f}  # half the measured floor"] if half > 0 else []


def _rate(key: str, measured: float, one_image: float) -> list[str]:
    """``key`` one image under the measured rate; none when that is 0 (it could not fail)."""
    budget = measured - one_image
    return [f"{key} = {budget:.4f}"] if budget > 0 else []


def _other_tap(m: Measurement, precision: str, tap: str) -> list[str]:
    runs = m.runs[precision]
    worst = _worst(runs, tap)
    cosine = min(r.metrics[tap].cosine for r in runs)
    sqnr = min(r.metrics[tap].sqnr_db for r in runs)
    lines = [
        f"{precision}: measured worst max_abs_norm {worst.max_abs_norm:.3g}, cos {cosine:.6f}, "
        f"SQNR {sqnr:.1f} dB",
        f"max_abs_norm = {_ceil1(QUANT_FACTOR * worst.max_abs_norm):.1g}",
        *_quantised_cosine(cosine),
    ]
    if math.isfinite(sqnr):
        lines.append(f"min_sqnr_db = {math.floor(sqnr - SQNR_MARGIN_DB):.1f}")
    return lines


def _logits_rates(m: Measurement, precision: str, tap: str) -> list[str]:
    """Top-1 / top-5 one image under the worst run (fp32: exact agreement when measured so)."""
    found = [r.metrics[tap] for r in m.runs[precision] if r.metrics[tap].top1_agreement is not None]
    if not found:
        return []
    top1 = min(x.top1_agreement or 0.0 for x in found)
    top5 = min(x.top5_overlap or 0.0 for x in found)
    if precision == "fp32" and top1 == 1.0 and top5 == 1.0:
        return ["min_top1_agreement = 1.0", "min_top5_overlap = 1.0"]
    return _rate("min_top1_agreement", top1, 1.0 / m.images) + _rate(
        "min_top5_overlap", top5, 1.0 / m.images
    )


def rules_text(m: Measurement, allow_loose: bool = False) -> str:
    """The measured budgets as tolerance-file TOML, between marker comments.

    Raises :class:`LooseBudget` for an fp32 budget far above the floor (``allow_loose``).
    """
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    versions = ", ".join(f"{p} {package_version(p)}" for p in _VERSIONS)
    lines = [
        _BEGIN.format(model=m.model),
        f"# measured by `parity budgets` on {when}: {m.images} fixture images, weights sha256 "
        f"{m.weights[:12]}, {versions}",
    ]
    lines += [f"# n/a: {line}" for line in m.skipped]
    lines += [f"# {name} ran {how}" for name, how in m.executed.items()]
    taken: set[str] = set()
    for precision, runs in m.runs.items():
        for glob, variants in _globs(precision, sorted({r.variant for r in runs}), taken):
            chosen = [r for r in runs if r.variant in variants]
            lines += _class_rules(m, precision, glob, chosen, allow_loose)
    lines.append(_END.format(model=m.model))
    return "\n".join(lines) + "\n"


def _globs(precision: str, variants: list[str], taken: set[str]) -> list[tuple[str, list[str]]]:
    """The variant part of a class's rule keys (unique in the file: one table per key).

    fp32: ``*``. Another class: its one variant's name, else the measured variants' common
    prefix or suffix with ``*``; each key's ``variants`` list says what it judges, so a glob
    never reaches a variant that was not measured. Otherwise one key per variant.
    """
    prefix = os.path.commonprefix(variants)
    suffix = os.path.commonprefix([v[::-1] for v in variants])[::-1]
    candidates = ["*"] if precision == "fp32" else []
    candidates += variants if len(variants) == 1 else [f"{prefix}*", f"*{suffix}"]
    for glob in candidates:
        if glob not in taken and glob != "**":
            taken.add(glob)
            return [(glob, variants)]
    taken.update(variants)
    return [(v, [v]) for v in variants]


def _class_rules(
    m: Measurement, precision: str, glob: str, runs: Sequence[Run], allow_loose: bool
) -> list[str]:
    part = Measurement(m.model, m.images, m.weights, m.taps, {precision: list(runs)})
    listed = ", ".join(f'"{v}"' for v in sorted({r.variant for r in runs}))
    lines = []
    for tap in m.taps:
        body = (
            _fp32_tap(part, tap, allow_loose)
            if precision == "fp32"
            else _other_tap(part, precision, tap)
        )
        body += _logits_rates(part, precision, tap)
        lines += [
            "",
            f'[budget."{m.model}/{glob}/{tap}"]',
            f'notes = "{body[0]} over {", ".join(r.name for r in runs)}"',
            f'precision = ["{precision}"]',
            f"variants = [{listed}]",
            *body[1:],
        ]
    return lines


def write_rules(path: Path, model: str, text: str) -> None:
    """Put ``text`` into the tolerance file ``path``, replacing an earlier measurement.

    Atomic; a file that exists but is not a valid tolerance file is never replaced (one
    :class:`~parity.errors.ToleranceError` line), nor is the result written unless it loads.
    """
    if path.is_dir():
        raise ToleranceError(f"{path}: is a directory; --write takes a tolerance file")
    old = 'extends = "bundled"\n'
    if path.exists():
        TolerancePolicy.load(path)  # refuses a file parity cannot parse: never replaced
        old = path.read_text()
    block = re.compile(
        re.escape(_BEGIN.format(model=model)) + r".*?" + re.escape(_END.format(model=model))
        + r"\n?", re.S,
    )  # fmt: skip
    kept = block.sub("", old).rstrip("\n")
    new = f"{kept}\n\n{text}"
    with atomic.replacing(path) as temporary:
        temporary.write_text(new)
        TolerancePolicy.load(temporary)
