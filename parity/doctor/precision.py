"""``precision``: TF32, autocast and torch.compile named as causes of server-side drift.

Each cause is a pair of variants that differ in one setting, both judged against the
eager CPU reference:

* **TF32**: ``torch_cuda_tf32`` (torch's defaults: cuDNN convolutions in TF32) fails while
  ``torch_cuda_fp32`` (the same run, TF32 off) passes: TF32 is the cause, and turning it
  off is the fix.
* **autocast**: an fp16/bf16 autocast variant against strict fp32 on the same device:
  the drift reduced precision costs (logits SQNR, top-1 agreement), a problem when it
  breaks the variant's budgets.
* **compile**: ``torch.compile`` against eager on the same device. Measured on the CPU
  (bench/server_floor.md): no inductor setting tried (freezing off/on, layout
  optimisation off, scalar C++ codegen, no epilogue fusion or split reductions) removed
  the CPU drift; it stays within the fp32 budgets there.

Pairs whose variants are ``n/a`` here (no GPU) are skipped with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from parity.doctor.findings import OK, PROBLEM, SKIPPED, Finding
from parity.result import VariantResult

TF32_FIX = "torch.backends.cudnn.allow_tf32 = False; torch.backends.cuda.matmul.allow_tf32 = False"

#: (cause, variant under suspicion, the same run without the cause).
PAIRS: tuple[tuple[str, str, str], ...] = (
    ("TF32", "torch_cuda_tf32", "torch_cuda_fp32"),
    ("autocast fp16", "torch_cuda_fp16", "torch_cuda_fp32"),
    ("autocast bf16", "torch_cuda_bf16", "torch_cuda_fp32"),
    ("autocast bf16", "torch_cpu_bf16", "torch"),
    ("compile", "torch_cuda_compile", "torch_cuda_fp32"),
    ("compile", "torch_compile", "torch"),
)

FIXES = {
    "TF32": TF32_FIX,
    "autocast fp16": "run without torch.autocast (fp32), or ship with budgets for reduced "
    "precision",
    "autocast bf16": "run without torch.autocast (fp32), or ship with budgets for reduced "
    "precision",
    "compile": "no torch._inductor.config setting tried removes the drift (bench/"
    "server_floor.md); check the compiled model itself (it is what ships)",
}


def _summary(result: VariantResult) -> str:
    verdict = result.verdict
    if verdict is None:
        return result.status + (f" ({result.reason or result.error})" if result.status else "")
    first = verdict.first_failure
    logits = verdict.taps[-1].metrics
    worst = max(verdict.taps, key=lambda t: t.metrics.max_abs_norm)
    where = f"first over budget at '{first.tap.name}'" if first else "within budget"
    return (
        f"{result.status}, {where}; worst max_abs_norm {worst.metrics.max_abs_norm:.2g} "
        f"('{worst.tap.name}'), logits SQNR {logits.sqnr_db:.1f} dB, top-1 "
        f"{logits.top1_agreement:.3g}"
    )


def precision_finding(results: Mapping[str, VariantResult | None]) -> Finding:
    """The finding for the :data:`PAIRS` whose results are given (``None``: the reference)."""
    causes, passes, skipped = [], [], []
    fixes: list[str] = []
    evidence: dict[str, Any] = {}
    for cause, suspect, control in PAIRS:
        if suspect not in results or control not in results:
            continue
        relaxed, strict = results[suspect], results[control]
        assert relaxed is not None
        if relaxed.status == "n/a" or (strict is not None and strict.status == "n/a"):
            skipped.append(f"{suspect}: {relaxed.reason or (strict and strict.reason)}")
            continue
        strict_ok = strict is None or strict.passed  # None: the reference itself
        evidence[f"{suspect} vs {control}"] = {
            suspect: _summary(relaxed),
            control: "the reference" if strict is None else _summary(strict),
        }
        if not relaxed.passed and strict_ok:
            causes.append(f"{cause}: {suspect} fails ({_summary(relaxed)}) while {control} passes")
            if FIXES[cause] not in fixes:
                fixes.append(FIXES[cause])
        elif relaxed.passed:
            passes.append(f"{suspect} within its budgets")
    if skipped:
        evidence["n/a"] = skipped
    if causes:
        return Finding("precision", PROBLEM, "; ".join(causes), evidence, fix="; ".join(fixes))
    if passes:
        return Finding("precision", OK, "; ".join(passes), evidence)
    return Finding("precision", SKIPPED, "no pair could run here: " + "; ".join(skipped), evidence)


def diagnose_precision(session: Any, variants: Sequence[str] | None = None) -> Finding:
    """Run the pairs' variants on the fixtures (live vs torch) and name the causes."""
    from parity.variants import VARIANTS

    names = set(variants) if variants is not None else {n for p in PAIRS for n in p[1:]}
    results: dict[str, VariantResult | None] = {}
    for name in sorted(names):
        variant = VARIANTS[name]
        results[name] = None if variant.reference else session.check(variant)
    return precision_finding(results)
