"""The hardware-sensitive variants give the same verdicts under every ISA cap this CPU allows.

``ONEDNN_MAX_CPU_ISA`` / ``ATEN_CPU_CAPABILITY`` are set for the run (every worker inherits
them); a probe first proves the runtimes honour the cap, so a cap that did nothing cannot
pass as "the same verdict".
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from parity.harness import RunConfig, Session
from parity.isa import IsaCap, isa_caps
from parity.variants import VARIANTS

#: The variants whose kernels depend on the CPU, and ONNX Runtime's as the fp32 anchor.
SENSITIVE = ("ort_dynamo", "openvino_f32", "openvino_bf16", "openvino_f16", "torch_cpu_bf16")

PROBE = r"""
import numpy as np, openvino as ov, openvino.opset13 as ops
p = ops.parameter([1, 16, 16, 16], np.float32)
w = ops.constant(np.ones((16, 16, 3, 3), np.float32))
m = ov.Model([ops.convolution(p, w, [1, 1], [1, 1], [1, 1], [1, 1])], [p])
c = ov.Core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
print([o.get_rt_info()["primitiveType"].astype(str) for o in c.get_runtime_model().get_ordered_ops()
       if o.get_rt_info()["layerType"].astype(str) == "Convolution"][0])
"""
#: The ISA name in OpenVINO's convolution primitive under each cap.
PRIMITIVE = {"SSE41": "sse42", "AVX": "avx", "AVX2": "avx2", "AVX512_CORE": "avx512"}


def test_caps_follow_the_cpu_flags():
    assert [c.onednn for c in isa_caps(frozenset({"sse4_1", "avx", "avx2", "fma"}))] == [
        "SSE41",
        "AVX",
        "AVX2",
    ]
    flags = frozenset({"sse4_1", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl",
                       "avx512dq", "avx512_bf16"})  # fmt: skip
    assert isa_caps(flags)[-1] == IsaCap("AVX512_CORE_BF16", "avx512")
    assert isa_caps(frozenset({"avx2"})) == []  # no SSE4.1 flag: nothing to cap to


@pytest.mark.heavy
@pytest.mark.torch
@pytest.mark.openvino
@pytest.mark.parametrize("cap", isa_caps(), ids=lambda cap: cap.onednn)
def test_same_verdicts_under_every_isa_cap(cap: IsaCap, monkeypatch: pytest.MonkeyPatch):
    for key, value in cap.env.items():
        monkeypatch.setenv(key, value)
    used = subprocess.run([sys.executable, "-c", PROBE], env=dict(os.environ),
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert PRIMITIVE.get(cap.onednn, "avx512") in used, used  # the cap took effect
    session = Session(RunConfig(model="mobilenet_v2"))
    variants = [VARIANTS[name] for name in SENSITIVE]
    session.prefetch(variants)
    results = {v.name: session.check(v) for v in variants}
    verdicts = {name: r.status for name, r in results.items()}
    assert verdicts == dict.fromkeys(SENSITIVE, "pass"), {
        n: r.error or (r.verdict and r.verdict.explain()) for n, r in results.items()
    }
    for name in ("openvino_bf16", "openvino_f16"):
        executed = results[name].executed
        assert executed is not None
        assert executed.split()[0] == VARIANTS[name].options["precision"]
