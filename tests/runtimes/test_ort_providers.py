"""ONNX Runtime execution providers beyond the CPU: used where the build has them, else n/a.

A variant asking for a provider the installed onnxruntime lacks is ``n/a`` with the
reason; a session where ONNX Runtime drops the provider (its silent CPU fallback) is a
failed run, never a CPU result reported under the provider's name.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from deferred import deferred

from parity.backends.onnxruntime.runner import OnnxRuntimeRunner, provider_unavailable
from parity.errors import RuntimeFailure
from parity.harness import Session
from parity.variants import VARIANTS

ort = deferred("onnxruntime")

pytestmark = [pytest.mark.torch, pytest.mark.onnxruntime]

PROVIDERS = [n for n, v in VARIANTS.items() if "provider" in v.options]


def test_every_provider_has_a_variant():
    assert {VARIANTS[n].options["provider"] for n in PROVIDERS} == {
        "CUDAExecutionProvider", "TensorrtExecutionProvider", "OpenVINOExecutionProvider"
    }  # fmt: skip


@pytest.mark.parametrize("variant", PROVIDERS)
def test_provider_runs_or_is_not_applicable(
    session_for: Callable[[str], Session], fp32_parity, variant: str
):
    provider = VARIANTS[variant].options["provider"]
    if provider in ort.get_available_providers():
        fp32_parity("mobilenet_v2", variant)
        return
    result = session_for("mobilenet_v2").check(VARIANTS[variant])
    assert result.status == "n/a"
    assert result.reason == provider_unavailable(VARIANTS[variant].options)
    assert f"no {provider}" in result.reason and "CPUExecutionProvider" in result.reason


def test_a_dropped_provider_is_a_failed_run_not_a_cpu_pass(session_for: Callable[[str], Session]):
    missing = next(
        (VARIANTS[n].options["provider"] for n in PROVIDERS if VARIANTS[n].unavailable()), None
    )
    if missing is None:
        pytest.skip("every execution provider is installed here")
    session = session_for("mobilenet_v2")
    artifact = session.artifact(VARIANTS["ort_dynamo"])
    # The runner builds its ONNX Runtime session at the first run (not at activation).
    with (
        pytest.warns(UserWarning, match="not in available provider names"),  # ORT's own
        pytest.raises(RuntimeFailure, match=f"did not enable {missing}"),
        OnnxRuntimeRunner("ort_dynamo_x", artifact.path, provider=missing) as runner,
    ):
        runner.run(session.batch[:1], ())
