"""Dataset-level parity of the digits models: accuracy per runtime and precision.

    .venv/bin/python bench/digits_accuracy.py [--models mobilenet_v2_digits resnet18_digits]
                                              [--threads 1] [--out bench/digits_accuracy.md]

For each digits card (trained on first use by models/digits/train.py) it runs
:func:`parity.evaluate.evaluate` over the whole test split (``<cache>/digits/test``, 360
images) with torch and every registered runtime variant among ``VARIANTS_WANTED``, plus
two int8 calibrations that show what bad calibration costs:

* ``litert_int8 / photos``: calibrated on ``fixtures/calibration`` (32 photographs: the
  default for cards without a ``calibration`` key, and the wrong distribution here),
  through a temporary copy of the card without its ``calibration`` key;
* ``litert_int8 / noise``: calibrated on standard-normal noise, through an exporter
  ``tflite_int8_noise`` (``calibration="noise"`` of :mod:`parity.export.tflite`) and a
  variant ``litert_int8_noise`` registered in this process only.

Besides the counts it reports each runtime's logit SQNR vs torch over the whole split
(``10 log10(sum ref^2 / sum (got - ref)^2)``, from one extra pass over the cached
artifacts): flips only show errors large enough to change an answer; the SQNR tells how
far from that a runtime is. Writes the Markdown table to ``--out`` (artifacts are cached).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch  # noqa: F401  (torch and torchvision before TensorFlow: import-order trap)
import torchvision  # noqa: F401

from parity.backends import Exporter, exporters
from parity.evaluate import EvalConfig, EvalResult, evaluate, scan_image_folder
from parity.harness import RunConfig, make_runner
from parity.lazy import package_version
from parity.local import LocalSession as Session
from parity.paths import cache_dir
from parity.preprocess import preprocess_batch
from parity.runner import OUTPUT
from parity.variants import VARIANTS, Variant
from parity.zoo import get_card

EXPORTERS = exporters()

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("mobilenet_v2_digits", "resnet18_digits")
VARIANTS_WANTED = (
    "ort_dynamo", "ort_torchscript", "keras", "ort_tf2onnx", "litert_fp32", "litert_fp16",
    "litert_dynamic", "litert_int8", "litert_int8_io",
)  # fmt: skip
#: variant -> (precision, calibration data)
PRECISION = {
    "torch": ("fp32", "-"),
    "ort_dynamo": ("fp32", "-"),
    "ort_torchscript": ("fp32", "-"),
    "keras": ("fp32", "-"),
    "ort_tf2onnx": ("fp32", "-"),
    "litert_fp32": ("fp32", "-"),
    "litert_fp16": ("fp16 weights", "-"),
    "litert_dynamic": ("int8 weights, fp32 activations", "-"),
    "litert_int8": ("int8, float I/O", "digits (train split)"),
    "litert_int8_io": ("int8, int8 I/O", "digits (train split)"),
    "litert_int8_noise": ("int8, float I/O", "noise N(0, 1)"),
    "litert_int8 / photos": ("int8, float I/O", "fixtures/calibration photos"),
}


def register_noise_variant() -> str:
    """``tflite_int8_noise`` + ``litert_int8_noise``, unless the registries have them."""
    if "tflite_int8_noise" not in EXPORTERS:
        base = EXPORTERS["tflite_int8"]
        options = {**base.options, "calibration": "noise"}
        EXPORTERS["tflite_int8_noise"] = dataclasses.replace(
            base, name="tflite_int8_noise", options=options
        )
    if "litert_int8_noise" not in VARIANTS:
        base_variant = VARIANTS["litert_int8"]
        VARIANTS["litert_int8_noise"] = dataclasses.replace(
            base_variant,
            name="litert_int8_noise",
            exporter="tflite_int8_noise",
            description="LiteRT + XNNPACK on TFLite full int8 calibrated on noise",
        )
    assert isinstance(EXPORTERS["tflite_int8_noise"], Exporter)
    assert isinstance(VARIANTS["litert_int8_noise"], Variant)
    return "litert_int8_noise"


def photos_card(model: str, folder: Path) -> Path:
    """A copy of the card without its ``calibration`` key (same name, so same weights)."""
    card = get_card(model)
    lines = [
        line for line in card.path.read_text().splitlines() if not line.startswith("calibration =")
    ]
    path = folder / f"{model}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def logit_sqnr(card: str, variants: list[str], data: Path, threads: int) -> dict[str, float]:
    """Logit SQNR (dB) of each variant vs torch over the whole dataset, in one batch."""
    session = Session(RunConfig(model=card, threads=threads))
    folder = scan_image_folder(data, session.card.num_classes)
    spec = session.card.preprocess.replace(layout="NCHW")
    batch = preprocess_batch([image.path for image in folder.images], spec)
    logits = {}
    for name in ["torch", *variants]:
        variant = VARIANTS[name]
        source = session.model().module if name == "torch" else session.artifact(variant)
        with make_runner(variant, source, threads) as runner:
            logits[name] = runner.run(batch, taps=())[OUTPUT].astype(np.float64)
    reference = logits.pop("torch")
    signal = float((reference**2).sum())
    result = {}
    for name, got in logits.items():
        noise = float(((got - reference) ** 2).sum())
        result[name] = float("inf") if noise == 0 else 10 * np.log10(signal / noise)
    return result


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def measure(model: str, threads: int) -> dict[str, Any]:
    data = cache_dir() / "digits" / "test"
    wanted = [v for v in VARIANTS_WANTED if v in VARIANTS] + [register_noise_variant()]
    start = time.perf_counter()
    main = evaluate(EvalConfig(data, model, wanted, threads=threads), log)
    log(f"{model}: main evaluation {time.perf_counter() - start:.0f} s")
    ran = [s.name for s in main.scores[1:] if not s.error]
    sqnr: dict[str, float] = logit_sqnr(model, ran, data, threads)
    with tempfile.TemporaryDirectory() as tmp:
        card_path = photos_card(model, Path(tmp))
        photos = evaluate(EvalConfig(data, str(card_path), ["litert_int8"], threads=threads), log)
        photo_sqnr = logit_sqnr(str(card_path), ["litert_int8"], data, threads)["litert_int8"]
    if photos.weights != main.weights or photos.indices != main.indices:
        raise SystemExit("the photo-calibrated run used other weights or images")
    rows = [(s.name, s, sqnr.get(s.name)) for s in main.scores]
    rows.append(("litert_int8 / photos", photos.score("litert_int8"), photo_sqnr))
    metrics_files = sorted((cache_dir() / "trained").glob(f"{model}-*.json"))
    training = json.loads(metrics_files[-1].read_text()) if metrics_files else {}
    return {
        "model": model,
        "card": get_card(model),
        "main": main,
        "rows": rows,
        "training": training,
    }


def _pct(value: float) -> str:
    return f"{value:.2%}"


def markdown(measured: list[dict[str, Any]], threads: int, seconds: float) -> str:
    lines = [
        "# Dataset-level parity on the digits models",
        "",
        "Generated by `bench/digits_accuracy.py` "
        f"({datetime.date.today().isoformat()}, {platform.machine()}, 2 cores shared with "
        f"other jobs, runtimes at {threads} thread(s); {seconds:.0f} s in all). "
        "torch models trained by `models/digits/train.py` on scikit-learn's digits "
        "(8x8 grayscale, rendered as RGB and upscaled); evaluated on the whole test split "
        "with `parity eval`'s engine. Versions: "
        + ", ".join(
            f"{p} {package_version(p)}"
            for p in ("torch", "onnxruntime", "tensorflow-cpu", "keras", "ai-edge-litert")
        )
        + ".",
        "",
        "`Δ` is accuracy minus torch's, in percentage points; `agreement` is top-1 agreement "
        "with torch; `flips` are images whose top-1 differs from torch's (`margin`: torch's "
        "logit gap between its class and the runtime's for the worst flip); `logit SQNR` is "
        "10 log10(sum ref² / sum (got - ref)²) over all test logits (∞: bitwise equal).",
        "",
    ]
    for entry in measured:
        main: EvalResult = entry["main"]
        training = entry["training"]
        hw = "x".join(map(str, entry["card"].preprocess.input_hw))
        lines += [
            f"## {entry['model']}",
            "",
            f"Input {hw}; weights `{main.weights['sha256'][:12]}`; "
            f"{len(main.indices)} test images."
            + (
                f" Training: {training['train_images']} images, "
                f"{training['config']['epochs']} epochs, {training['train_seconds']:.0f} s "
                f"wall / {training['train_cpu_seconds']:.0f} s CPU at "
                f"{training['config']['threads']} thread(s), test accuracy "
                f"{_pct(training['test_accuracy'])}."
                if training
                else ""
            ),
            "",
            "| runtime | precision | int8 calibration | accuracy | Δ vs torch | agreement "
            "| flips | worst flip margin | logit SQNR dB | inference s |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        reference = main.scores[0]
        for name, score, sqnr in entry["rows"]:
            precision, calibration = PRECISION.get(name, ("?", "?"))
            if score.error:
                error = score.error.replace("|", "/")
                lines.append(
                    f"| {name} | {precision} | {calibration} | error: {error} | | | | | | |"
                )
                continue
            worst = max((f["margin"] for f in score.flips), default=None)
            delta = (score.accuracy - reference.accuracy) * 100
            lines.append(
                f"| {name} | {precision} | {calibration} | {_pct(score.accuracy)} | "
                f"{'—' if score is reference else f'{delta:+.2f} pp'} | "
                f"{_pct(score.agreement)} | {len(score.flips)} | "
                f"{'-' if worst is None else f'{worst:.2f}'} | "
                f"{'-' if sqnr is None else f'{sqnr:.1f}'} | {score.seconds:.2f} |"
            )
        by_name = {name: (score, sqnr) for name, score, sqnr in entry["rows"]}
        summary = [
            f"{label} {(by_name[name][0].accuracy - reference.accuracy) * 100:+.2f} pp, "
            f"{len(by_name[name][0].flips)} flips, logit SQNR {by_name[name][1]:.1f} dB"
            for label, name in (
                ("digits", "litert_int8"),
                ("photos", "litert_int8 / photos"),
                ("noise", "litert_int8_noise"),
            )
            if name in by_name and not by_name[name][0].error
        ]
        if summary:
            lines += ["", "int8 calibration, good vs bad: " + "; ".join(summary) + "."]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "digits_accuracy.md")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    measured = [measure(model, args.threads) for model in args.models]
    text = markdown(measured, args.threads, time.perf_counter() - start)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
