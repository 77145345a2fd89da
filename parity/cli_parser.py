"""The ``parity`` command line's surface: its subcommands, options, help and exit codes.

The commands themselves are :mod:`parity.cli_commands` (and the project/converter
siblings); :mod:`parity.cli` parses with :func:`build_parser` and maps outcomes to exit codes.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from parity import __version__
from parity.backends import backends
from parity.cli_converters import add_parser as add_converters_parser
from parity.cli_project import add_parsers as add_project_parsers
from parity.errors import ParityError
from parity.zoo import DEFAULT_MODEL

EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3

EPILOG = """\
exit codes: 0 pass, 1 a budget broken or a runtime failed, 2 usage error or bad input,
3 internal error (traceback written to a file; --debug prints it).

examples:
  parity run                                    mobilenet_v2, both ONNX exports, bundled fixtures
  parity run --model resnet18 --runtime onnxruntime --json report.json
  parity run --fixtures my_images/ --weights my_model.pt
  parity check                                  the release gate ([tool.parity] in pyproject.toml)
  parity update-goldens --model mobilenet_v2    accept a deliberate change, showing what moved
  parity list
  parity eval --data DIR --model resnet18_digits -r litert   accuracy and flips on a dataset
  parity run --artifact their_model.tflite      a file made elsewhere, per tap where locatable
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line (:class:`ParityError`, exit 2), not usage text + message."""

    def error(self, message: str) -> NoReturn:
        raise ParityError(f"{self.prog}: {message} (see {self.prog} --help)")


def count(least: int = 1) -> Callable[[str], int]:
    """An argparse type: an integer >= ``least`` (``--jobs -1`` or ``--threads 0`` would run)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    return parse


def seconds(text: str) -> float:
    """An argparse type: a finite number of seconds > 0 (``nan`` never times out, 0 always)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="parity",
        description="Check that a PyTorch model gives the same numbers in every runtime it "
        "ships to, layer by layer, on golden fixture images.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"parity {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="export, run every runtime on the fixtures, compare per tap (default command)",
        description="Export the model, run the fixtures through each runtime variant and "
        "compare every tap with the torch reference against the tolerance budgets.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--model", "-m", default=DEFAULT_MODEL, help="model card name or .toml path")
    run.add_argument(
        "--runtime",
        "-r",
        action="append",
        metavar="R",
        help="variant (ort_dynamo) or family (onnxruntime); repeatable; default: both ONNX exports",
    )
    run.add_argument("--fixtures", type=Path, help="folder of images (default: bundled fixtures)")
    run.add_argument(
        "--weights", help="'calibrated' (default), a torchvision name (IMAGENET1K_V1) or a .pt file"
    )
    run.add_argument("--tolerances", type=Path, help="tolerance TOML (default: fixtures/...)")
    run.add_argument("--tap", action="append", metavar="NAME", help="only these taps (repeatable)")
    run.add_argument("--threads", type=count(), default=2, help="runtime threads (default 2)")
    add_worker_options(run)
    run.add_argument("--strict", action="store_true", help="a variant that does not apply fails")
    run.add_argument("--rebuild", action="store_true", help="re-export even if cached")
    run.add_argument("--json", type=Path, metavar="FILE", help="also write a JSON report")
    run.add_argument(
        "--routes",
        type=Path,
        metavar="DIR",
        help="compare the routes checked (which conversion to ship): print the table and "
        "write DIR/routes.md, .json, .html and a Model Explorer overlay per TFLite file",
    )
    run.add_argument("--summary", action="store_true", help="summary table only, no per-tap tables")
    run.add_argument("--quiet", "-q", action="store_true", help="no progress messages")
    run.add_argument(
        "--artifact",
        type=Path,
        metavar="PATH",
        help="check an .onnx/.tflite/.keras file made elsewhere (alone unless --runtime is given)",
    )
    run.add_argument(
        "--artifact-runtime",
        choices=[b.name for b in backends().values() if b.probe is not None],
        help="runtime for --artifact (default: detected from the file)",
    )
    run.add_argument(
        "--tap-map",
        type=Path,
        metavar="FILE",
        help="TOML/JSON tap -> tensor name map for --artifact (default: by shape and order)",
    )
    run.add_argument(
        "--input-layout",
        choices=["NCHW", "NHWC"],
        help="input layout of --artifact when it cannot be detected",
    )

    check = commands.add_parser(
        "check",
        help="the release gate: every configured model and runtime vs the goldens (and torch)",
        description="Run the configured matrix against the stored goldens (regression) and, "
        "unless --no-live, against torch now; write JSON, Markdown, JUnit XML and HTML reports.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "--config", type=Path, help="TOML file with a [tool.parity] or [parity] table"
    )
    check.add_argument("--model", "-m", action="append", help="override the configured models")
    check.add_argument("--runtime", "-r", action="append", metavar="R", help="override runtimes")
    check.add_argument(
        "--strict", action="store_true", help="an n/a variant fails ([tool.parity] strict)"
    )
    check.add_argument(
        "--artifact",
        type=Path,
        action="append",
        metavar="FILE",
        help="check a file made elsewhere (ONNX, TFLite, Keras) against the model; repeatable",
    )
    check.add_argument("--report", type=Path, metavar="DIR", help="report folder")
    check.add_argument("--no-live", action="store_true", help="only compare with the goldens")
    check.add_argument(
        "--bundle", type=Path, metavar="DIR", help="use a prebuilt bundle (no torch/TF needed)"
    )
    check.add_argument("--summary", action="store_true", help="summary tables only")
    add_worker_options(check)
    check.add_argument("--quiet", "-q", action="store_true", help="no progress messages")

    add_project_parsers(commands)
    add_converters_parser(commands)

    update = commands.add_parser(
        "update-goldens",
        help="regenerate goldens from torch (the explicit way to accept a change)",
        description="Recompute the torch reference on the fixtures and rewrite the goldens "
        "atomically, printing what moved and by how much.",
    )
    update.add_argument("--model", "-m", action="append", help="models (default: all non-heavy)")
    update.add_argument(
        "--dry-run", action="store_true", help="show what would move; write nothing"
    )
    update.add_argument("--quiet", "-q", action="store_true", help="no progress messages")

    bundle = commands.add_parser(
        "bundle",
        help="export every artifact and copy the goldens into a bundle for runtime-only envs",
        description="Build (or reuse from the cache) the artifacts of the given runtimes, and "
        "write them with the goldens and a manifest of hashes into one folder.",
    )
    bundle.add_argument("--out", type=Path, required=True, metavar="DIR", help="bundle folder")
    bundle.add_argument("--model", "-m", action="append", help="models (default: all non-heavy)")
    bundle.add_argument("--runtime", "-r", action="append", metavar="R", help="default: all")
    bundle.add_argument("--quiet", "-q", action="store_true", help="no progress messages")

    evals = commands.add_parser(
        "eval",
        help="dataset-level parity: accuracy, top-1 agreement and flipped images vs torch",
        description="Run torch and each runtime variant over a labelled ImageFolder "
        "(DIR/<class>/<image>) and report accuracy, top-1 agreement with torch and every "
        "image whose prediction flips. Class folders map to class indices by a classes.txt "
        "or synsets.txt at DIR, else the model's class names, else integer folder names, "
        "else sorted order (one folder per class). Each backend runs in its own worker "
        "process. See parity/evaluate/.",
    )
    evals.add_argument("--data", type=Path, required=True, metavar="DIR", help="ImageFolder root")
    evals.add_argument("--model", "-m", default=DEFAULT_MODEL, help="model card name or .toml")
    evals.add_argument(
        "--runtime",
        "-r",
        action="append",
        metavar="R",
        help="variant or family; repeatable; default: both ONNX exports",
    )
    evals.add_argument("--weights", help="weights source (default: the card's)")
    evals.add_argument(
        "--shard",
        metavar="k/N",
        help="only every N-th image starting at k (0-based); writes a shard JSON",
    )
    evals.add_argument(
        "--limit", type=count(), metavar="N", help="only N images, spread evenly over the dataset"
    )
    evals.add_argument("--json", type=Path, metavar="FILE", help="write the result as JSON")
    evals.add_argument("--batch-size", type=count(), default=64, help="images per batch (64)")
    evals.add_argument("--threads", type=count(), default=2, help="runtime threads (default 2)")
    evals.add_argument(
        "--device", default="cpu", choices=("cpu", "cuda", "auto"),
        help="where the torch reference runs: cpu (default), cuda (fp32, TF32 off), auto "
        "(cuda when a GPU is usable); images/s are reported per variant",
    )  # fmt: skip
    evals.add_argument("--rebuild", action="store_true", help="re-export even if cached")
    evals.add_argument(
        "--flips",
        type=count(0),
        default=10,
        metavar="N",
        help="flips listed per variant (default 10; all are in --json)",
    )
    evals.add_argument("--quiet", "-q", action="store_true", help="no progress display")
    evals.add_argument(
        "--engine", choices=("local", "ray"), default="local",
        help="local: worker processes here (default); ray: a Ray Dataset with a pool of actors "
        "per variant (pip install 'parity[ray]')",
    )  # fmt: skip
    evals.add_argument(
        "--address", metavar="ADDR",
        help="--engine ray: an existing Ray cluster ('auto', host:port); default: a local one",
    )  # fmt: skip
    add_worker_options(evals)
    merge = commands.add_parser(
        "eval-merge",
        help="merge 'parity eval --shard' JSON files into one table",
        description="Merge shard results of one evaluation: counts add up, flips concatenate; "
        "shards that disagree on model, weights, preprocessing, dataset or variants, or that "
        "overlap or leave images out, are an error.",
    )
    merge.add_argument("shards", nargs="+", type=Path, metavar="SHARD.json")
    merge.add_argument("--json", type=Path, metavar="FILE", help="write the merged JSON")
    merge.add_argument("--flips", type=count(0), default=10, metavar="N", help="flips listed (10)")

    commands.add_parser("list", help="list models, runtime variants and fixtures")
    doctor = commands.add_parser(
        "doctor",
        help="diagnose common causes of drift (preprocessing, batchnorm, Keras port, int8 data)",
        description="Run diagnostic checks and print each cause with its evidence and fix; "
        "exit 0 if every check is ok (or skipped), 1 if any finds a problem, 2 bad input.",
    )
    doctor.add_argument("--model", "-m", default=DEFAULT_MODEL, help="model card name")
    doctor.add_argument(
        "--check",
        action="append",
        metavar="NAME",
        help="preprocessing, batchnorm, port_lint, calibration, delegates (repeatable; all)",
    )
    doctor.add_argument(
        "--preprocess",
        metavar="MODULE:ATTR",
        help="your preprocessing: a path or PIL.Image -> array function, a torchvision "
        "transform, a Keras layer or preprocess_input-style function, a tf.data map function",
    )
    doctor.add_argument(
        "--images", type=Path, metavar="DIR", help="your images (default: the card's fixtures)"
    )
    doctor.add_argument(
        "--count", type=count(), default=4, metavar="N", help="fixtures for the model checks (4)"
    )
    doctor.add_argument(
        "--model-object",
        metavar="MODULE:FUNCTION",
        help="a function returning your torch model as you use it (its train/eval mode kept)",
    )
    doctor.add_argument(
        "--calibration",
        default="images",
        metavar="DATA",
        help="int8 calibration data: images (the card's), noise, FILE.npy or an image folder",
    )
    doctor.add_argument(
        "--representative",
        metavar="MODULE:FUNCTION",
        help="your TFLite representative_dataset generator (yields [array]); replaces "
        "--calibration",
    )
    doctor.add_argument(
        "--port", type=Path, metavar="FILE", help="your Keras port (.keras), .onnx or .tflite"
    )
    doctor.add_argument("--weights", help="weights source (default: the card's)")
    doctor.add_argument("--json", type=Path, metavar="FILE", help="write the findings as JSON")
    return parser


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """``--jobs`` and ``--timeout``: how the backends' worker processes run."""
    from parity.workers import DEFAULT_TIMEOUT

    parser.add_argument(
        "--jobs",
        "-j",
        type=count(),
        metavar="N",
        help="backends run side by side in N worker processes (default: one per core; "
        "1: one at a time); runtime threads are shared out so jobs x threads <= cores",
    )
    parser.add_argument(
        "--timeout", type=seconds, default=DEFAULT_TIMEOUT, metavar="S",
        help=f"seconds one export or variant may take before its worker is killed and it "
        f"fails (default {DEFAULT_TIMEOUT:g})",
    )  # fmt: skip
