"""The hardware-sensitive variants' worst error under each ISA cap this CPU allows.

For each cap of :func:`parity.isa.isa_caps` (``ONEDNN_MAX_CPU_ISA`` + ``ATEN_CPU_CAPABILITY``
set for the whole run, so every worker inherits it): first a probe of what each runtime
really used (OpenVINO's convolution primitive, oneDNN's ISA line for torch, torch's ATen
capability), then ``parity run`` of the variants below with a JSON report; the table lists
each variant's verdict, what it ran in, its worst max_abs_norm (tap) and its stem figure.
The verdicts must not move with the cap (tests/test_isa_caps.py asserts it).

    python bench/isa_caps.py [--models mobilenet_v2 resnet18] [--out bench/isa_caps.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from parity.isa import IsaCap, isa_caps

VARIANTS = ["ort_dynamo", "openvino_f32", "openvino_bf16", "openvino_f16", "torch_cpu_bf16"]

PROBE = r"""
import numpy as np, torch, openvino as ov, openvino.opset13 as ops
p = ops.parameter([1, 16, 16, 16], np.float32)
w = ops.constant(np.ones((16, 16, 3, 3), np.float32))
m = ov.Model([ops.convolution(p, w, [1, 1], [1, 1], [1, 1], [1, 1])], [p])
c = ov.Core().compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
info = [o.get_rt_info() for o in c.get_runtime_model().get_ordered_ops()]
conv = [i for i in info if i["layerType"].astype(str) == "Convolution"]
kinds = [i["primitiveType"].astype(str) for i in conv]
torch.nn.functional.conv2d(torch.ones(1, 16, 32, 32), torch.ones(16, 16, 3, 3))
print("RESULT", torch.backends.cpu.get_cpu_capability(), kinds[0])
"""


def probe(cap: IsaCap) -> dict[str, str]:
    """What OpenVINO, torch's oneDNN and ATen used under ``cap``."""
    env = {**os.environ, **cap.env, "ONEDNN_VERBOSE": "1"}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
    lines = done.stdout.splitlines()
    aten, openvino = next(x for x in lines if x.startswith("RESULT")).split()[1:]
    isa = next((x.split(",isa:")[1] for x in lines if ",isa:" in x), "?")
    return {"aten": aten, "openvino": openvino, "torch_onednn": isa}


def run(cap: IsaCap, model: str, report: Path) -> dict[str, Any]:
    selectors = [arg for v in VARIANTS for arg in ("-r", v)]
    argv = [sys.executable, "-m", "parity.cli", "run", "-q", "--summary", "-m", model,
            *selectors, "--json", str(report)]  # fmt: skip
    subprocess.run(argv, env={**os.environ, **cap.env}, capture_output=True, text=True)
    data: dict[str, Any] = json.loads(report.read_text())
    return data


def rows(cap: IsaCap, model: str, data: dict[str, Any]) -> list[str]:
    out = []
    for v in data["variants"]:
        if "taps" not in v:
            out.append(f"| {model} | {cap.onednn} | {v['name']} | {v['status']} | - | - | - |")
            continue
        worst = max(v["taps"], key=lambda t: t["metrics"]["max_abs_norm"])
        stem = v["taps"][0]["metrics"]
        ran = (v.get("executed") or v["precision"]).split(" (")[0]
        out.append(
            f"| {model} | {cap.onednn} | {v['name']} | {v['status']} | {ran} | "
            f"{worst['metrics']['max_abs_norm']:.3g} ({worst['name']}) | "
            f"{stem['max_abs_norm']:.3g} / {1 - stem['cosine']:.2g} |"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet18"])
    parser.add_argument("--out", type=Path, default=Path("bench/isa_caps.md"))
    args = parser.parse_args()
    caps = isa_caps()
    lines = [
        "# The hardware-sensitive variants under each ISA cap",
        "",
        f"Measured by `python bench/isa_caps.py` on {datetime.date.today()}: "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, caps "
        f"{', '.join(c.onednn for c in caps)} (the last is this CPU's own ISA), 16 fixtures.",
        "",
        "## What each runtime used under each cap",
        "",
        "| ONEDNN_MAX_CPU_ISA | ATEN_CPU_CAPABILITY | OpenVINO conv | torch oneDNN | ATen |",
        "|---|---|---|---|---|",
    ]
    for cap in caps:
        used = probe(cap)
        lines.append(
            f"| {cap.onednn} | {cap.aten} | {used['openvino']} | {used['torch_onednn']} | "
            f"{used['aten']} |"
        )
    lines += [
        "",
        "## Verdict, execution and error per cap",
        "",
        "| model | cap | variant | verdict | ran | worst max_abs_norm (tap) | stem max_abs_norm "
        "/ 1-cos |",
        "|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            for cap in caps:
                report = Path(tmp) / f"{model}-{cap.onednn}.json"
                lines += rows(cap, model, run(cap, model, report))
    args.out.write_text("\n".join(lines) + "\n" + NOTES)
    print(args.out.read_text())


NOTES = """
## Derived bf16 / f16 figures (fixtures/tolerances.toml, `openvino_bf16`/`openvino_f16`)

This CPU has no bf16 or f16 execution (OpenVINO's OPTIMIZATION_CAPABILITIES: FP32, INT8,
BIN, EXPORT_IMPORT), so the OpenVINO runner emulates them: weights (rank >= 2) and every op
output rounded to bf16/f16 with inserted Convert pairs, f32 kernels accumulating. The one
native bf16 measurement (an AMD EPYC with avx512_bf16, STACK.md) against the emulation,
mobilenet_v2:

| figure | native bf16 (avx512_bf16) | emulated bf16 (here) | budget |
|---|---|---|---|
| stem max_abs_norm | 0.0103 | 0.0078 | 0.03 |
| stem 1-cos | 1.8e-5 | 1.8e-5 | 6e-5 |
| worst tap max_abs_norm | 0.81 | 0.708 (features.17) | 2.0 |

Native runs up to 1.32x the emulated max_abs_norm (the same cosine at the stem: OpenVINO
rounds where the emulation does, its fused conv+bias+clamp rounds once where the emulation
rounds each op); each bf16/f16 budget sits about 3x above the emulated figure. torch's
own bf16 (autocast, `torch_cpu_bf16`) on AVX2 runs ATen's native bf16 convolutions (oneDNN's
bf16 convolution needs AVX512_CORE), on AVX-512 oneDNN's: the same rounding points (bf16
inputs and outputs, f32 accumulation), and its budgets already cover the H200's bf16
(0.93 vs 0.909 here).

What moves with the cap: the fp32 kernels' summation order (openvino_f32 worst 1.02e-4 under
SSE4.1/AVX vs 8.86e-5 under AVX2; resnet18 7.98e-6 vs 8.15e-6) and torch's ATen bf16
kernels (torch_cpu_bf16 0.928 under ATen DEFAULT vs 0.909 under AVX2): within 15% and 2%,
far inside their budgets. The emulated bf16/f16 figures do not move (rounding dominates).
ONNX Runtime (MLAS) has no cap and gives the same figures under each. Every verdict: pass.
"""


if __name__ == "__main__":
    main()
