"""The doctor's ``precision`` check names TF32 (with the fix), autocast and compile drift.

No GPU here: TF32 is reproduced on the CPU the way cuDNN applies it (conv and linear
inputs and weights rounded to TF32's 10-bit mantissa, fp32 accumulation), judged with
the budgets of ``torch_cuda_tf32``; the strict side is a real fp32 run of another
kernel path (torch.compile) judged as ``torch_cuda_fp32``. Real torch, real fixtures.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
from deferred import deferred

from parity.compare import compare_taps
from parity.doctor import CHECKS, PROBLEM, TF32_FIX, diagnose_precision, precision_finding
from parity.doctor.findings import OK
from parity.harness import Session, make_runner
from parity.result import VariantResult
from parity.variants import VARIANTS

torch = deferred("torch")

pytestmark = [pytest.mark.torch, pytest.mark.torch_cpu]

MODEL = "mobilenet_v2"


def tf32_round(tensor: Any) -> Any:
    """Round float32 to TF32 (10 mantissa bits, round to nearest), as tensor cores read it."""
    bits = tensor.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def tf32_module(module: Any) -> Any:
    emulated = copy.deepcopy(module)
    with torch.no_grad():
        for layer in emulated.modules():
            if isinstance(layer, torch.nn.Conv2d | torch.nn.Linear):
                layer.weight.copy_(tf32_round(layer.weight))
                layer.register_forward_pre_hook(lambda _m, args: (tf32_round(args[0]),))
    return emulated


def judged(session: Session, name: str, outputs: dict[str, Any]) -> VariantResult:
    """``outputs`` judged as variant ``name`` against the reference, with its budgets."""
    verdict = compare_taps(MODEL, name, session.taps, session.reference, outputs, session.policy)
    return VariantResult(VARIANTS[name], verdict, None, 0.0)


@pytest.fixture(scope="module")
def runs(
    session_for: Callable[[str], Session], local_session_for: Callable[[str], Session]
) -> dict[str, dict[str, Any]]:
    session = session_for(MODEL)
    module = local_session_for(MODEL).model().module  # torch here, to emulate TF32
    with make_runner(VARIANTS["torch"], tf32_module(module), 2) as runner:
        tf32 = runner.run(session.batch, session.taps)
    strict, _ = session.outputs(VARIANTS["torch_compile"])
    return {"tf32": tf32, "strict": strict}


def test_tf32_failing_where_tf32_off_passes_is_named_with_the_fix(session_for, runs):
    session = session_for(MODEL)
    results = {
        "torch_cuda_tf32": judged(session, "torch_cuda_tf32", runs["tf32"]),
        "torch_cuda_fp32": judged(session, "torch_cuda_fp32", runs["strict"]),
    }
    assert results["torch_cuda_tf32"].status == "fail"  # the fp32 budgets catch TF32
    assert results["torch_cuda_fp32"].status == "pass"
    finding = precision_finding(results)
    assert finding.status == PROBLEM
    assert finding.cause.startswith("TF32: torch_cuda_tf32 fails")
    assert "while torch_cuda_fp32 passes" in finding.cause
    assert finding.fix == TF32_FIX
    assert "torch.backends.cudnn.allow_tf32 = False" in finding.fix


def test_tf32_is_not_blamed_when_strict_fp32_fails_too(session_for, runs):
    session = session_for(MODEL)
    results = {
        "torch_cuda_tf32": judged(session, "torch_cuda_tf32", runs["tf32"]),
        "torch_cuda_fp32": judged(session, "torch_cuda_fp32", runs["tf32"]),
    }
    finding = precision_finding(results)
    assert "TF32" not in finding.cause and finding.fix == ""


def test_clean_pair_is_ok(session_for, runs):
    session = session_for(MODEL)
    results = {
        "torch_cuda_tf32": judged(session, "torch_cuda_tf32", runs["strict"]),
        "torch_cuda_fp32": judged(session, "torch_cuda_fp32", runs["strict"]),
    }
    assert precision_finding(results).status == OK


def test_on_this_machine_cuda_pairs_are_skipped_with_the_reason(session_for, runs):
    session = session_for(MODEL)
    finding = diagnose_precision(
        session, ["torch_cuda_tf32", "torch_cuda_fp32", "torch_compile", "torch"]
    )
    no_gpu = VARIANTS["torch_cuda_fp32"].unavailable()
    if no_gpu is None:
        pytest.skip("a GPU is present: the CUDA pair runs (bench/gpu_check.py)")
    assert finding.status == OK, finding.cause  # compile on the CPU stays within fp32
    assert finding.cause == "torch_compile within its budgets"
    assert any(no_gpu in line for line in finding.evidence["n/a"])
    assert "precision" in CHECKS
