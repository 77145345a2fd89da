"""Measure the server variants against torch per tap, and what moves the compile drift.

For each model: run the CPU server variants (``torch_compile``, ``torch_cpu_bf16``, the
OpenVINO variants when openvino is installed) on the fixtures and record, per tap,
max_abs_norm, cosine and SQNR, and on the logits top-1 agreement / top-5 overlap. The
budgets of these variants in fixtures/tolerances.toml are set from these numbers.

``--compile-settings`` also compiles the model under ``torch._inductor.config`` settings
that could remove the compile-vs-eager drift (no taps hooked: the plain compiled model)
and reports the logits error of each.

    python bench/server_floor.py [--models mobilenet_v2 resnet18] [--variants ...]
        [--compile-settings] [--out bench/server_floor.md]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from parity import lazy
from parity.compare import TapMetrics, tap_metrics
from parity.harness import RunConfig, make_runner
from parity.local import LocalSession as Session
from parity.variants import VARIANTS

CPU_VARIANTS = [
    "torch_compile",
    "torch_cpu_bf16",
    "openvino_onnx",
    "openvino_f32",
    "openvino_bf16",
    "openvino_f16",
]

#: torch._inductor.config settings tried against the compile drift (logits only).
COMPILE_SETTINGS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "freezing (constant-fold weights, BN into conv)": {"freezing": True},
    "layout_optimization off": {"layout_optimization": False},
    "scalar C++ (cpp.simdlen 1)": {"cpp.simdlen": 1},
    "no epilogue fusion, no split reductions": {
        "epilogue_fusion": False,
        "split_reductions": False,
    },
}


def summary(metrics: Mapping[str, TapMetrics]) -> list[str]:
    worst = max(metrics, key=lambda k: metrics[k].max_abs_norm)
    cos = min(metrics, key=lambda k: metrics[k].cosine)
    sqnr = min(metrics, key=lambda k: metrics[k].sqnr_db)
    logits = metrics["logits"]
    return [
        f"{metrics[worst].max_abs_norm:.3g} ({worst})",
        f"{metrics[cos].cosine:.7f} ({cos})",
        f"{metrics[sqnr].sqnr_db:.1f} ({sqnr})",
        f"{logits.top1_agreement:.4f}",
        f"{logits.top5_overlap:.4f}",
    ]


def row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def measure_variants(
    session: Session, names: Sequence[str]
) -> tuple[list[str], dict[str, dict[str, TapMetrics]]]:
    lines = [
        "| variant | first run s | second run s | worst max_abs_norm | min cosine | "
        "min SQNR dB | top-1 | top-5 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    results: dict[str, dict[str, TapMetrics]] = {}
    for name in names:
        variant = VARIANTS[name]
        reason = variant.unavailable()
        if reason is not None or not lazy.installed(variant.module):
            lines.append(row([name, f"n/a: {reason or variant.module + ' not installed'}"]))
            continue
        source = session.artifact(variant) if variant.exporter else session.model().module
        with make_runner(variant, source, session.config.threads) as runner:
            got = runner.run(session.batch, session.taps)
            first = runner.last_inference_time
            runner.run(session.batch, session.taps)
            second = runner.last_inference_time
        metrics = {
            t.name: tap_metrics(session.reference[t.name], got[t.name], logits=t.is_logits)
            for t in session.taps
        }
        results[name] = metrics
        lines.append(row([name, f"{first:.1f}", f"{second:.1f}", *summary(metrics)]))
        print(lines[-1], flush=True)
    return lines, results


def per_tap(taps: Sequence[str], results: Mapping[str, Mapping[str, TapMetrics]]) -> list[str]:
    names = list(results)
    lines = [
        "| tap | " + " | ".join(f"{n} max_abs_norm / 1-cos / SQNR dB" for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for tap in taps:
        cells = [
            f"{m.max_abs_norm:.2e} / {1 - m.cosine:.1e} / {m.sqnr_db:.1f}"
            for m in (results[n][tap] for n in names)
        ]
        lines.append(row([tap, *cells]))
    return lines


def compile_settings(session: Session) -> list[str]:
    """Logits of the compiled model (no taps hooked) under each inductor setting."""
    torch = lazy.torch()
    import torch._inductor.config as inductor_config

    lines = [
        "| inductor setting | compile+run s | logits max_abs_norm | logits SQNR dB |",
        "|---|---|---|---|",
    ]
    reference = session.reference["output"]
    for label, options in COMPILE_SETTINGS.items():
        torch._dynamo.reset()
        module = session.model().module
        with (
            inductor_config.patch(options),
            make_runner(VARIANTS["torch_compile"], module, session.config.threads) as runner,
        ):
            got = runner.run(session.batch)["output"]
        logits = tap_metrics(reference, got, logits=True)
        seconds = runner.last_inference_time
        cells = [label, f"{seconds:.0f}", f"{logits.max_abs_norm:.2e}", f"{logits.sqnr_db:.1f}"]
        lines.append(row(cells))
        print(lines[-1], flush=True)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet18"])
    parser.add_argument("--variants", nargs="+", default=CPU_VARIANTS)
    parser.add_argument("--compile-settings", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench/server_floor.md"))
    args = parser.parse_args()
    torch = lazy.torch()
    start = time.perf_counter()
    out = [
        "# Server variants vs torch eager CPU: measured floors",
        "",
        f"`python bench/server_floor.py {' '.join(f'--models {m}' for m in args.models)}`, "
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; calibrated weights, "
        "16 fixture images, every tap. Other jobs shared the 2 cores: times are indicative.",
    ]
    for model in args.models:
        session = Session(RunConfig(model=model))
        print(f"# {model}", flush=True)
        lines, results = measure_variants(session, args.variants)
        out += ["", f"## {model}", "", *lines]
        if results:
            out += ["", "Per tap:", "", *per_tap([t.name for t in session.taps], results)]
        if args.compile_settings:
            out += ["", "torch.compile under inductor settings:", "", *compile_settings(session)]
    out += ["", f"Total {time.perf_counter() - start:.0f} s."]
    args.out.write_text("\n".join(out) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
