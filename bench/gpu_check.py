"""Every CUDA torch variant and the TF32 diagnosis, in one process, as a markdown table.

Prepared for a short run on a GPU machine (the project's own has none):

    python bench/gpu_check.py --out DIR [--models mobilenet_v2 resnet18]

For each model: each ``torch_cuda_*`` variant checked live against the eager CPU
reference (verdict, first divergent tap, worst max_abs_norm / cosine / SQNR, logits
top-1 / top-5: the figures that set the CUDA budgets in fixtures/tolerances.toml), the
doctor's ``precision`` finding (TF32 named when ``torch_cuda_tf32`` fails and
``torch_cuda_fp32`` passes), and the reference's throughput on the GPU vs the CPU
(batch 256, no taps). Writes ``DIR/gpu_check.md`` and ``DIR/gpu_check.json``. Without a
usable GPU it prints why and exits 2, having checked nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from parity import lazy
from parity.doctor import diagnose_precision
from parity.harness import RunConfig, make_runner
from parity.local import LocalSession as Session
from parity.result import VariantResult
from parity.variants import VARIANTS

CUDA = [name for name, v in VARIANTS.items() if v.family == "torch_cuda"]


def row(result: VariantResult) -> dict[str, Any]:
    entry: dict[str, Any] = {"variant": result.variant.name, "status": result.status}
    verdict = result.verdict
    if verdict is None:
        entry["note"] = result.reason or result.error
        return entry
    taps = verdict.taps
    worst = max(taps, key=lambda t: t.metrics.max_abs_norm)
    first = verdict.first_failure
    entry.update(
        first_divergent=first.tap.name if first else None,
        worst=f"{worst.metrics.max_abs_norm:.3g} ({worst.tap.name})",
        min_cosine=f"{min(t.metrics.cosine for t in taps):.7f}",
        min_sqnr_db=f"{min(t.metrics.sqnr_db for t in taps):.1f}",
        top1=taps[-1].metrics.top1_agreement,
        top5=taps[-1].metrics.top5_overlap,
        seconds=round(result.seconds, 1),
    )
    return entry


def throughput(session: Session, variant: str, batch: int = 256, repeats: int = 5) -> float:
    """Images/s of a variant's runner without taps on the fixtures tiled to ``batch``."""
    images = np.resize(session.batch, (batch, *session.batch.shape[1:]))
    with make_runner(VARIANTS[variant], session.model().module, session.config.threads) as r:
        r.run(images)  # warm-up: cuDNN autotuning, allocation
        start = time.perf_counter()
        for _ in range(repeats):
            r.run(images)
    return batch * repeats / (time.perf_counter() - start)


def check_model(model: str) -> tuple[list[str], dict[str, Any]]:
    session = Session(RunConfig(model=model))
    rows = [row(session.check(VARIANTS[name])) for name in CUDA]
    finding = diagnose_precision(session, [*CUDA, "torch"])
    rates = {name: throughput(session, name) for name in ("torch", "torch_cuda_fp32")}
    head = ["variant", "status", "first_divergent", "worst", "min_cosine", "min_sqnr_db"]
    lines = [
        f"## {model}",
        "",
        "| " + " | ".join([*head, "top1", "top5", "seconds"]) + " |",
        "|---" * (len(head) + 3) + "|",
    ]
    for entry in rows:
        cells = [str(entry.get(k, entry.get("note", "")) or "-") for k in head]
        cells += [str(entry.get(k, "")) for k in ("top1", "top5", "seconds")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"doctor precision: **{finding.status}**: {finding.cause}",
        f"fix: `{finding.fix}`" if finding.fix else "",
        "",
        f"throughput (batch 256, no taps): CPU eager {rates['torch']:.0f} images/s, "
        f"torch_cuda_fp32 {rates['torch_cuda_fp32']:.0f} images/s",
        "",
    ]
    return lines, {"variants": rows, "precision": finding.to_dict(), "images_per_s": rates}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet18"])
    args = parser.parse_args()
    reason = VARIANTS["torch_cuda_fp32"].unavailable()
    if reason is not None:
        print(f"bench/gpu_check.py: nothing checked: {reason}", file=sys.stderr)
        return 2
    torch = lazy.torch()
    args.out.mkdir(parents=True, exist_ok=True)
    lines = [
        "# CUDA torch variants vs torch eager CPU",
        "",
        f"{torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"cuDNN {torch.backends.cudnn.version()}; calibrated weights, 16 fixtures, every tap.",
        "",
    ]
    data = {}
    for model in args.models:
        model_lines, data[model] = check_model(model)
        lines += model_lines
        print("\n".join(model_lines), flush=True)
    (args.out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    (args.out / "gpu_check.json").write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"wrote {args.out / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
