"""``parity budgets``: measure a model's noise floor and write budget rules from it.

The method of ``bench/noise_floor.py``: every fp32 variant that applies to the card runs
the fixtures at 1 and 2 threads (ONNX Runtime with graph optimisation on and off through
``ort_dynamo_noopt``; LiteRT with XNNPACK on and off), and each tap's error relative to
the torch reference is recorded. The fp32 budget of the model sits 5x above the worst
``max_abs_norm`` floor (cosine 30x). Quantised variants (fp16, dynamic range, int8) get
one rule per family, above what was measured: 2.5x the error, 3 dB under the SQNR, one
image of top-1 agreement under the measurement.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from parity.applicability import not_applicable_reason
from parity.artifacts import package_version
from parity.compare import TapMetrics, tap_metrics
from parity.harness import RunConfig, Session, make_runner
from parity.variants import resolve_variants

#: Variants measured for the fp32 floor (threads 1 and 2); the rest are quantised.
FP32 = ("ort_dynamo", "ort_torchscript", "ort_dynamo_noopt", "keras", "ort_tf2onnx",
        "litert_fp32", "litert_fp32_noxnn",
        "litert_torch_fp32", "litert_torch_fp32_noxnn")  # fmt: skip
#: Quantised variants grouped under one budget rule each (``litert_int8*`` covers int8 I/O).
QUANTISED_GROUPS = ("litert_fp16", "litert_dynamic", "litert_int8", "litert_torch_fp16",
                    "litert_torch_dynamic", "litert_torch_int8")  # fmt: skip
FP32_FACTOR, COSINE_FACTOR, QUANT_FACTOR, SQNR_MARGIN_DB = 5.0, 30.0, 2.5, 3.0
_VERSIONS = ("torch", "onnxruntime", "tensorflow-cpu", "ai-edge-litert")
_BEGIN = "# -- parity budgets: {model} (begin) --"
_END = "# -- parity budgets: {model} (end) --"

Progress = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Floor:
    """The worst figures measured over some runs: all taps, and the logits tap alone."""

    runs: tuple[str, ...]
    max_abs_norm: float
    worst_tap: str
    cosine: float
    sqnr_db: float
    top1: float | None
    top5: float | None


@dataclasses.dataclass(frozen=True)
class Measurement:
    """What ``parity budgets`` measured for one model."""

    model: str
    images: int
    weights: str
    fp32: Floor | None
    quantised: dict[str, Floor]
    skipped: tuple[str, ...]


def _ceil1(value: float) -> float:
    """``value`` rounded up to one significant digit (a budget reads as 5e-4, not 4.87e-4)."""
    if value <= 0:
        return 0.0
    exponent = math.floor(math.log10(value))
    return math.ceil(value / 10**exponent) * 10**exponent


def _floor(runs: Sequence[tuple[str, dict[str, TapMetrics]]]) -> Floor:
    every = [(tap, m) for _, metrics in runs for tap, m in metrics.items()]
    worst_tap, worst = max(every, key=lambda item: item[1].max_abs_norm)
    logits = [m for _, m in every if m.top1_agreement is not None]
    return Floor(
        runs=tuple(name for name, _ in runs),
        max_abs_norm=worst.max_abs_norm,
        worst_tap=worst_tap,
        cosine=min(m.cosine for _, m in every),
        sqnr_db=min(m.sqnr_db for _, m in every),
        top1=min((m.top1_agreement or 0.0) for m in logits) if logits else None,
        top5=min((m.top5_overlap or 0.0) for m in logits) if logits else None,
    )


def measure(
    model: str, selectors: Sequence[str] | None = None, progress: Progress = lambda m: None
) -> Measurement:
    """Run every applicable variant of ``selectors`` (default: all) against torch."""
    session = Session(RunConfig(model=model), progress)
    chosen = resolve_variants(selectors or ["onnxruntime", "keras", "litert"])
    reference = session.reference
    fp32: list[tuple[str, dict[str, TapMetrics]]] = []
    quantised: dict[str, list[tuple[str, dict[str, TapMetrics]]]] = {}
    skipped = []
    for variant in chosen:
        if variant.reference:
            continue
        reason = not_applicable_reason(variant, session.card)
        if reason is not None:
            skipped.append(f"{variant.name}: {reason}")
            continue
        for threads in (1, 2) if variant.name in FP32 else (session.config.threads,):
            progress(f"measuring {variant.name} at {threads} thread(s)")
            with make_runner(variant, session.artifact(variant), threads) as runner:
                obtained = runner.run(session.batch, session.taps)
            metrics = {
                t.name: tap_metrics(reference[t.name], obtained[t.name], logits=t.is_logits)
                for t in session.taps
            }
            group = next((g for g in QUANTISED_GROUPS if variant.name.startswith(g)), None)
            runs = fp32 if group is None else quantised.setdefault(group, [])
            runs.append((f"{variant.name}@{threads}t", metrics))
    return Measurement(
        model=model,
        images=len(session.fixtures),
        weights=session.model().sha256,
        fp32=_floor(fp32) if fp32 else None,
        quantised={group: _floor(runs) for group, runs in quantised.items()},
        skipped=tuple(skipped),
    )


def _fp32_rule(m: Measurement, floor: Floor) -> list[str]:
    budget = max(_ceil1(FP32_FACTOR * floor.max_abs_norm), 1e-6)
    cosine = 1.0 - max(_ceil1(COSINE_FACTOR * (1.0 - floor.cosine)), 1e-9)
    return [
        f'[budget."{m.model}/*/*"]',
        f'notes = "fp32 floor {floor.max_abs_norm:.2e} ({floor.worst_tap}), min cosine '
        f"{floor.cosine:.10f} over {', '.join(floor.runs)} -> {FP32_FACTOR:g}x / "
        f'{COSINE_FACTOR:g}x"',
        f"max_abs_norm = {budget:.0e}",
        f"min_cosine = {cosine:.10g}",
    ]


def _quantised_cosine(cosine: float) -> list[str]:
    """A cosine budget under the measured floor that can still fail (none if the floor is ~0).

    The usual margin (``QUANT_FACTOR`` x the floor's distance from 1) goes to 0 or below on a
    floor like int8 on random weights (cosine 0.45): such a budget could never fail, so half
    the floor is the budget instead.
    """
    loose = 1.0 - _ceil1(QUANT_FACTOR * (1.0 - cosine))
    if loose > 0:
        return [f"min_cosine = {loose:.6g}"]
    half = math.floor(cosine / 2 * 100) / 100
    return [f"min_cosine = {half:.2f}  # half the measured floor"] if half > 0 else []


def _rate(key: str, measured: float, one_image: float) -> list[str]:
    """``key`` one image under the measured rate; none when that is 0 (it could not fail)."""
    budget = measured - one_image
    return [f"{key} = {budget:.4f}"] if budget > 0 else []


def _quantised_rules(m: Measurement, group: str, floor: Floor) -> list[str]:
    lines = [
        f'[budget."{m.model}/{group}*/*"]',
        f'notes = "measured worst max_abs_norm {floor.max_abs_norm:.3g} ({floor.worst_tap}), '
        f'cos {floor.cosine:.6f}, SQNR {floor.sqnr_db:.1f} dB over {", ".join(floor.runs)}"',
        f"max_abs_norm = {_ceil1(QUANT_FACTOR * floor.max_abs_norm):.1g}",
        *_quantised_cosine(floor.cosine),
        f"min_sqnr_db = {math.floor(floor.sqnr_db - SQNR_MARGIN_DB):.1f}",
    ]
    if floor.top1 is not None and floor.top5 is not None:
        one_image = 1.0 / m.images
        rates = _rate("min_top1_agreement", floor.top1, one_image)
        rates += _rate("min_top5_overlap", floor.top5, one_image)
        if rates:
            lines += [
                "",
                f'[budget."{m.model}/{group}*/logits"]',
                f'notes = "measured top-1 {floor.top1:.4f}, top-5 {floor.top5:.4f}: one image '
                'under"',
                *rates,
            ]
    return lines


def rules_text(m: Measurement) -> str:
    """The measured budgets as tolerance-file TOML, between marker comments."""
    when = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    versions = ", ".join(f"{p} {package_version(p)}" for p in _VERSIONS)
    lines = [
        _BEGIN.format(model=m.model),
        f"# measured by `parity budgets` on {when}: {m.images} fixture images, weights sha256 "
        f"{m.weights[:12]}, {versions}",
    ]
    lines += [f"# n/a: {line}" for line in m.skipped]
    if m.fp32 is not None:
        lines += _fp32_rule(m, m.fp32)
    for group, floor in m.quantised.items():
        lines += ["", *_quantised_rules(m, group, floor)]
    lines.append(_END.format(model=m.model))
    return "\n".join(lines) + "\n"


def write_rules(path: Path, model: str, text: str) -> None:
    """Put ``text`` into the tolerance file ``path``, replacing an earlier measurement."""
    old = path.read_text() if path.is_file() else 'extends = "bundled"\n'
    block = re.compile(
        re.escape(_BEGIN.format(model=model)) + r".*?" + re.escape(_END.format(model=model))
        + r"\n?", re.S,
    )  # fmt: skip
    kept = block.sub("", old).rstrip("\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{kept}\n\n{text}")
