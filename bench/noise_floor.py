"""Measure the fp32 noise floor of the ONNX Runtime variants against torch.

For each model, exporter, thread count and graph-optimisation level, run the fixtures
and record each tap's max |ort - torch| / max |torch| (worst image). The fp32 budgets in
fixtures/tolerances.toml are set a small factor above the worst figure printed here.

    python bench/noise_floor.py [--models mobilenet_v2 resnet18] [--out bench/noise_floor.md]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from parity.compare import tap_metrics
from parity.harness import RunConfig, make_runner
from parity.local import LocalSession as Session
from parity.variants import VARIANTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet18"])
    parser.add_argument("--out", type=Path, default=Path("bench/noise_floor.md"))
    args = parser.parse_args()
    rows = [
        "| model | artifact | threads | graph opt | worst tap | max_abs_norm | min cosine |",
        "|---|---|---|---|---|---|---|",
    ]
    for model in args.models:
        session = Session(RunConfig(model=model), progress=print)
        reference = session.reference
        for name in ("ort_dynamo", "ort_torchscript"):
            variant = VARIANTS[name]
            artifact = session.artifact(variant)
            for threads in (1, 2):
                for level in ("all", "disabled"):
                    runner = make_runner(variant, artifact, threads)
                    runner.graph_optimization = level  # type: ignore[attr-defined]
                    with runner:
                        obtained = runner.run(session.batch, session.taps)
                    worst = max(
                        session.taps,
                        key=lambda t: tap_metrics(reference[t.name], obtained[t.name]).max_abs_norm,
                    )
                    metrics = [
                        tap_metrics(reference[t.name], obtained[t.name]) for t in session.taps
                    ]
                    rows.append(
                        f"| {model} | {variant.exporter} | {threads} | {level} | {worst.name} | "
                        f"{max(m.max_abs_norm for m in metrics):.2e} | "
                        f"{min(m.cosine for m in metrics):.9f} |"
                    )
                    print(rows[-1])
    args.out.write_text(
        "# fp32 noise floor: ONNX Runtime vs torch (all fixture images)\n\n"
        + "\n".join(rows)
        + "\n"
    )


if __name__ == "__main__":
    main()
