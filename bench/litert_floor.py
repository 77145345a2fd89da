"""Measure every LiteRT variant against torch, per tap, and explain the quantised floors.

For each model: run the ten ``litert_*`` variants on the fixtures (``Session.check``) and
record, per tap, max_abs_norm, cosine, SQNR and (logits) top-1 agreement / top-5
overlap. The budgets for the litert variants in fixtures/tolerances.toml are set from
these numbers.

Two diagnostic sections explain the quantised numbers (``--no-diagnose`` skips them):

* sensitivity: the torch model alone, with its input rounded to the int8 input grid of
  the TFLite file, or its BatchNorm-folded weights rounded to fp16 / int8 per channel.
  This is what quantising these weights costs before any runtime is involved.
* calibration: full-int8 conversions calibrated on the calibration images (the artifact),
  on noise, and on the fixtures themselves (diagnostic only: never calibrate on the test
  set), with the head's int8 range against the fixtures' range.

    python bench/litert_floor.py [--models mobilenet_v2 resnet18] [--out bench/litert_floor.md]

``--family litert_torch`` measures the litert-torch route's variants the same way (the
diagnostics are the Keras route's; they are skipped):

    python bench/litert_floor.py --family litert_torch --out bench/litert_torch_floor.md
"""

from __future__ import annotations

import argparse
import copy
import datetime
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity import lazy
from parity.backends import get_exporter
from parity.backends.litert.runner import LiteRTRunner
from parity.compare import TapMetrics, tap_metrics
from parity.harness import RunConfig, make_runner
from parity.local import LocalSession as Session
from parity.variants import VARIANTS

#: What each family's files are converted with (the report's first line).
SOURCES = {
    "litert": "TFLite from the Keras twin (tf.lite.TFLiteConverter.from_keras_model)",
    "litert_torch": "TFLite from the torch module (litert_torch.convert; AI Edge Quantizer "
    "recipes for fp16/dynamic/int8)",
}


def short(name: str) -> str:
    return name.removeprefix("litert_").removeprefix("torch_").replace("_noxnn", " nx")


def summary_row(label: str, metrics: Mapping[str, TapMetrics], extra: Sequence[str] = ()) -> str:
    worst = max(metrics, key=lambda k: metrics[k].max_abs_norm)
    cos = min(metrics, key=lambda k: metrics[k].cosine)
    sqnr = min(metrics, key=lambda k: metrics[k].sqnr_db)
    logits = metrics["logits"]
    cells = [
        label,
        *extra,
        f"{metrics[worst].max_abs_norm:.3g} ({worst})",
        f"{metrics[cos].cosine:.7f} ({cos})",
        f"{metrics[sqnr].sqnr_db:.1f} ({sqnr})",
        f"{logits.top1_agreement:.4f}",
        f"{logits.top5_overlap:.4f}",
    ]
    return "| " + " | ".join(cells) + " |"


def wide_table(
    taps: Sequence[str],
    results: Mapping[str, Mapping[str, TapMetrics]],
    cell: Callable[[TapMetrics], str],
) -> list[str]:
    names = list(results)
    rows = [
        "| tap | " + " | ".join(short(n) for n in names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for tap in taps:
        rows.append(f"| {tap} | " + " | ".join(cell(results[n][tap]) for n in names) + " |")
    return rows


def measure_variants(
    session: Session, family: str
) -> tuple[list[str], dict[str, dict[str, TapMetrics]]]:
    header = [
        "| variant | convert s | MB | run ms (16 img, taps) | worst max_abs_norm | "
        "min cosine | min SQNR dB | top-1 | top-5 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    results: dict[str, dict[str, TapMetrics]] = {}
    for name in [n for n, v in VARIANTS.items() if v.family == family]:
        variant = VARIANTS[name]
        result = session.check(variant)
        if result.error is not None or result.verdict is None:
            raise SystemExit(f"{session.card.name} {name}: {result.error}")
        metrics = {t.tap.name: t.metrics for t in result.verdict.taps}
        results[name] = metrics
        artifact = session.artifact(variant)
        with make_runner(variant, artifact, session.config.threads) as runner:
            runner.run(session.batch, session.taps)  # warm-up: allocation, XNNPACK packing
            runner.run(session.batch, session.taps)
            ms = runner.last_inference_time * 1e3
        converter = artifact.metadata["converter"]
        seconds = converter.get("convert_seconds", converter.get("quantize_seconds"))
        extra = [
            f"{seconds:.1f}",
            f"{artifact.size_bytes / 1e6:.1f}",
            f"{ms:.0f}",
        ]
        header.append(summary_row(name, metrics, extra))
        print(header[-1], flush=True)
    return header, results


def fold_bn_and_round(module: Any, rounding: Callable[[Any], Any]) -> Any:
    """A copy whose conv weights are rounded *after* folding the following BatchNorm
    scale (what the converter quantises), and whose linear weights are rounded."""
    torch = lazy.torch()
    model = copy.deepcopy(module)
    modules = dict(model.named_modules())
    names = list(modules)
    with torch.no_grad():
        for i, name in enumerate(names):
            layer = modules[name]
            if isinstance(layer, torch.nn.Conv2d):
                bn = modules[names[i + 1]]
                assert isinstance(bn, torch.nn.BatchNorm2d), name
                scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).view(-1, 1, 1, 1)
                layer.weight.copy_(rounding(layer.weight * scale) / scale)
            elif isinstance(layer, torch.nn.Linear):
                layer.weight.copy_(rounding(layer.weight))
    return model


def int8_per_channel(w: Any) -> Any:
    step = w.abs().amax(dim=tuple(range(1, w.ndim)), keepdim=True) / 127
    return (w / step).round().clamp(-127, 127) * step


def sensitivity(session: Session, input_scale: float, input_zero: int) -> list[str]:
    """The torch model alone under the perturbations each TFLite mode makes."""
    reference = session.reference
    module = session.model().module
    x = session.batch
    q = np.clip(
        np.sign(x / input_scale) * np.floor(np.abs(x / input_scale) + 0.5) + input_zero, -128, 127
    )
    cases = {
        f"input on the int8 grid (scale {input_scale:.4g}, zp {input_zero})": (
            module,
            ((q - input_zero) * input_scale).astype(np.float32),
        ),
        "fp16 weights (BN folded), fp32 math": (
            fold_bn_and_round(module, lambda w: w.half().float()),
            x,
        ),
        "int8 per-channel weights (BN folded), fp32 math": (
            fold_bn_and_round(module, int8_per_channel),
            x,
        ),
    }
    rows = [
        "| torch with | worst max_abs_norm | min cosine | min SQNR dB | top-1 | top-5 |",
        "|---|---|---|---|---|---|",
    ]
    for label, (model, batch) in cases.items():
        with make_runner(VARIANTS["torch"], model, session.config.threads) as runner:
            got = runner.run(batch, session.taps)
        metrics = {
            t.name: tap_metrics(reference[t.name], got[t.name], logits=t.is_logits)
            for t in session.taps
        }
        rows.append(summary_row(label, metrics))
        print(rows[-1], flush=True)
    return rows


def calibration(session: Session) -> list[str]:
    """int8 conversions calibrated on different data; the head's int8 range vs fixtures."""
    from parity.export.tflite import convert_keras_model, output_layer, representative_batch

    lazy.tensorflow()
    keras = lazy.require("keras")
    keras_artifact = session.cache.get(get_exporter("keras"), session.context)
    model = keras.models.load_model(keras_artifact.path, compile=False)
    tap_layers = keras_artifact.metadata["runner_options"]["tap_layers"]
    fixtures = np.ascontiguousarray(session.batch.transpose(0, 2, 3, 1))
    sources = {
        "calibration images (the artifact)": representative_batch(session.context, "images"),
        "standard-normal noise": representative_batch(session.context, "noise"),
        "the fixtures themselves (diagnostic only)": fixtures,
    }
    rows = [
        "| int8 calibrated on | pooled int8 range | pooled clipped | worst max_abs_norm | "
        "min cosine | min SQNR dB | top-1 | top-5 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    pooled_ref = session.reference["pooled"]
    for label, data in sources.items():
        path = session.cache.root / f"litert-floor-{session.card.name}-int8.tflite"
        path.write_bytes(convert_keras_model(model, "int8", data))
        with LiteRTRunner("int8", path, tap_layers, output_layer=output_layer(model)) as runner:
            got = runner.run(session.batch, session.taps)
            detail = runner.tap_details(session.taps)["pooled"]
        path.unlink()
        scale, zero = detail["quantization"]
        low, high = (-128 - zero) * scale, (127 - zero) * scale
        clipped = float(np.mean((pooled_ref < low - scale / 2) | (pooled_ref > high + scale / 2)))
        metrics = {
            t.name: tap_metrics(session.reference[t.name], got[t.name], logits=t.is_logits)
            for t in session.taps
        }
        rows.append(summary_row(label, metrics, [f"[{low:.2f}, {high:.2f}]", f"{clipped:.2%}"]))
        print(rows[-1], flush=True)
    rows.append(
        f"\nFixtures' pooled range: [{pooled_ref.min():.2f}, {pooled_ref.max():.2f}]; "
        f"logits range: [{session.reference['logits'].min():.2f}, "
        f"{session.reference['logits'].max():.2f}]."
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet18"])
    parser.add_argument("--out", type=Path, default=Path("bench/litert_floor.md"))
    parser.add_argument("--no-diagnose", action="store_true", help="skip the diagnostics")
    parser.add_argument("--family", choices=sorted(SOURCES), default="litert")
    args = parser.parse_args()
    diagnose = not args.no_diagnose and args.family == "litert"
    start = time.perf_counter()
    litert = lazy.require("ai_edge_litert")
    lines = [
        "# LiteRT variants vs torch, per tap (all fixture images)",
        "",
        f"{datetime.date.today()}, ai-edge-litert {getattr(litert, '__version__', '?')}, "
        f"{SOURCES[args.family]}, calibrated "
        "weights, 2 threads. `nx` = XNNPACK off (builtin kernels). Worst/min over taps "
        "and images; the tap is in brackets. `convert s` is the converter alone; run ms "
        "is one tapped invoke of the 16-image batch (noisy: shared 2-core machine).",
    ]
    for model in args.models:
        session = Session(RunConfig(model=model), progress=print)
        taps = [t.name for t in session.taps]
        summary, results = measure_variants(session, args.family)
        lines += ["", f"## {model}", "", *summary]
        lines += ["", f"### {model}: max_abs_norm per tap", ""]
        lines += wide_table(taps, results, lambda m: f"{m.max_abs_norm:.2g}")
        lines += ["", f"### {model}: cosine per tap", ""]
        lines += wide_table(taps, results, lambda m: f"{m.cosine:.6f}")
        lines += ["", f"### {model}: SQNR dB per tap", ""]
        lines += wide_table(taps, results, lambda m: f"{m.sqnr_db:.1f}")
        if diagnose:
            inputs = session.artifact(VARIANTS["litert_int8_io"]).metadata["converter"]["inputs"]
            scale, zero = inputs[0]["scale"][0], inputs[0]["zero_point"][0]
            lines += ["", f"### {model}: sensitivity of the torch model itself", ""]
            lines += sensitivity(session, scale, zero)
            lines += ["", f"### {model}: int8 calibration data", ""]
            lines += calibration(session)
    lines += ["", f"Total {time.perf_counter() - start:.0f} s."]
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
