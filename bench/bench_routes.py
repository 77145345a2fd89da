"""Conversion time and peak memory of each route from torch to a shipped file, per model.

Each route runs cold in a fresh process (its own empty artifact folder; the weights from
the parity cache): the exporters of its chain are timed (``export_seconds`` of each
artifact built) and the process's peak RSS is read at the end, beside the RSS after the
torch model was loaded (the part the conversion itself adds is the difference).

    python bench/bench_routes.py [--models mobilenet_v2 resnet18] [--routes ROUTE ...]
        [--out bench/routes.md]
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

#: Route -> the exporter whose artifact it ships (its chain is built, cold).
ROUTES = {
    "torch.onnx dynamo": "onnx_dynamo",
    "torch.onnx TorchScript": "onnx_torchscript",
    "Keras twin -> TFLite fp32": "tflite_fp32",
    "Keras twin -> tf2onnx": "tf2onnx",
    "litert-torch fp32": "litert_torch_fp32",
    "litert-torch + AEQ static int8": "litert_torch_int8",
    "ExecuTorch XNNPACK": "executorch_xnnpack",
    "ExecuTorch portable": "executorch_portable",
    "onnx2tf (TorchScript ONNX -> TFLite fp32, fp16, dynamic)": "onnx2tf_fp32",
}


def _mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(model: str, exporter: str) -> None:
    """Build ``exporter``'s chain cold for ``model``; print one JSON line."""
    from parity.artifacts import ArtifactCache, BuildContext
    from parity.backends import get_exporter
    from parity.weights import load_model
    from parity.zoo import get_card

    card = get_card(model)
    loaded = load_model(card)
    loaded.module.eval()
    baseline = _mib()
    with tempfile.TemporaryDirectory() as folder:
        cache = ArtifactCache(Path(folder))
        ctx = BuildContext(card, lambda: loaded, cache)
        artifact = cache.get(get_exporter(exporter), ctx)
        seconds = {a.exporter: a.metadata["export_seconds"] for a in cache._memo.values()}
        print(
            json.dumps(
                {
                    "seconds": seconds,
                    "bytes": artifact.size_bytes,
                    "baseline_mib": baseline,
                    "peak_mib": _mib(),
                    "converter_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                }
            )
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet18"])
    parser.add_argument("--routes", nargs="+", choices=list(ROUTES), default=list(ROUTES))
    parser.add_argument("--out", type=Path, default=Path("bench/routes.md"))
    parser.add_argument("--child", nargs=2, metavar=("MODEL", "EXPORTER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    lines = [
        "# Routes from torch to a shipped file: conversion time and peak memory",
        "",
        f"{datetime.date.today()}, `python bench/bench_routes.py`: each route cold in a fresh "
        "process (2-core shared machine, other engineers' jobs running: times are noisy). "
        "`convert s`: the exporters of the route's chain (litert-torch's include importing "
        "litert-torch, 10-27 s cold, and locating the "
        "taps: one torch and one LiteRT run of an image); `peak MiB`: the process's peak RSS; "
        "`model MiB`: its RSS once torch and the weights were loaded; `converter MiB`: the peak "
        "RSS of a converter run as a subprocess in its own environment (onnx2tf), `-` for "
        "the routes converted in the process.",
    ]
    for model in args.models:
        lines += [
            "",
            f"## {model}",
            "",
            "| route | convert s (chain) | MB | peak MiB | model MiB | converter MiB |",
        ]
        lines.append("|---|---|---|---|---|---|")
        for route in args.routes:
            exporter = ROUTES[route]
            done = subprocess.run(
                [sys.executable, __file__, "--child", model, exporter],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["?"])[-1]
                lines.append(f"| {route} | failed: {tail} | | | | |")
                print(lines[-1], flush=True)
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1])
            chain = " + ".join(f"{name} {s:.1f}" for name, s in result["seconds"].items())
            total = sum(result["seconds"].values())
            converter = f"{result['converter_mib']:.0f}" if result["converter_mib"] else "-"
            lines.append(
                f"| {route} | {total:.1f} ({chain}) | {result['bytes'] / 1e6:.1f} | "
                f"{result['peak_mib']:.0f} | {result['baseline_mib']:.0f} | {converter} |"
            )
            print(lines[-1], flush=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
