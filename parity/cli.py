"""The ``parity`` command line: the one boundary where exceptions become exit codes.

Exit codes: 0 every check passed; 1 a budget broken or a runtime failed on an artifact;
2 usage error or bad input (unknown model, missing or corrupt file, a full disk, ...),
reported in one line; 3 an internal error (a bug in parity): one line saying where the
traceback was written (``--debug`` prints it instead). 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

from rich.console import Console
from rich.markup import escape

from parity import __version__, atomic
from parity.backends import backends
from parity.cli_converters import add_parser as add_converters_parser
from parity.cli_converters import run_command as run_converters_command
from parity.cli_project import add_parsers as add_project_parsers
from parity.cli_project import list_command
from parity.cli_project import run_command as run_project_command
from parity.errors import ParityError, environment_error
from parity.paths import cache_dir
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


def _parser() -> argparse.ArgumentParser:
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
    _add_worker_options(run)
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
    _add_worker_options(check)
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
    _add_worker_options(evals)
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


def _cmd_run(args: argparse.Namespace, console: Console) -> int:
    from parity.harness import RunConfig, run_parity
    from parity.report import print_report, report_to_dict, write_json

    config = RunConfig(
        model=args.model,
        runtimes=args.runtime,
        fixtures=args.fixtures,
        weights=args.weights,
        tolerances=args.tolerances,
        taps=args.tap,
        threads=args.threads,
        rebuild=args.rebuild,
        artifact=args.artifact,
        artifact_runtime=args.artifact_runtime,
        tap_map=args.tap_map,
        input_layout=args.input_layout,
        strict=args.strict,
        jobs=args.jobs,
        timeout=args.timeout,
    )
    with _progress(console, args.quiet) as progress:
        report = run_parity(config, progress)
    print_report(report, console, per_tap=not args.summary)
    if args.json:
        write_json(report_to_dict(report), args.json)
        console.print(f"JSON report: {args.json}")
    if args.routes:
        from parity.report import routes_table, write_routes

        model = report_to_dict(report)
        console.print(routes_table(model))
        for path in write_routes(model, args.routes):
            console.print(f"routes: {path}")
    return EXIT_PASS if report.passed else EXIT_FAIL


@contextlib.contextmanager
def _progress(console: Console, quiet: bool) -> Iterator[Callable[[str], None]]:
    """A progress callback: a live status line plus a timestamped log, or nothing."""
    if quiet:
        yield lambda message: None
        return
    with console.status("starting") as status:

        def progress(message: str) -> None:
            console.log(escape(message))
            status.update(escape(message))

        yield progress


def _cmd_check(args: argparse.Namespace, console: Console) -> int:
    from parity.config import load_gate_config
    from parity.harness import RunConfig, run_parity
    from parity.lazy import require
    from parity.report import gate_to_dict, print_report, write_reports
    from parity.variants import resolve_variants

    gate = load_gate_config(args.config)
    models = args.model or list(gate.models)
    modes = ("golden",) if args.no_live or not gate.live else ("golden", "live")
    if any(v.reference for v in resolve_variants(args.runtime or gate.runtimes)):
        # run_parity checks torch only where it is installed: asked for explicitly (-r torch)
        # where it is not, the gate would otherwise pass with nothing checked.
        require("torch")
    if args.artifact and len(models) != 1:
        raise ParityError(f"--artifact checks one model; pass --model (configured: {models})")
    reports = []
    with _progress(console, args.quiet) as progress:
        for artifact in args.artifact or ():
            config = RunConfig(
                model=models[0], fixtures=gate.fixtures, tolerances=gate.tolerances,
                threads=gate.threads, artifact=artifact, strict=args.strict or gate.strict,
                jobs=args.jobs, timeout=args.timeout,
            )  # fmt: skip
            reports.append(run_parity(config, progress, ("live",)))
        for model in [] if args.artifact else models:
            config = RunConfig(
                model=model,
                runtimes=args.runtime or gate.runtimes,
                fixtures=gate.fixtures,
                tolerances=gate.tolerances,
                goldens=gate.goldens,
                threads=gate.threads,
                bundle=args.bundle,
                strict=args.strict or gate.strict,
                jobs=args.jobs,
                timeout=args.timeout,
            )
            reports.append(run_parity(config, progress, modes))
            for shipped in gate.shipped(model):  # the files the project ships: as --artifact
                if "live" not in modes:
                    console.print(
                        f"[yellow]{shipped.path}[/]: not checked (parity locates the taps of "
                        "a file made elsewhere with torch now; --no-live runs without it)"
                    )
                    continue
                config = dataclasses.replace(
                    config, runtimes=None, bundle=None, artifact=shipped.path,
                    artifact_runtime=shipped.runtime, tap_map=shipped.taps,
                    input_layout=shipped.layout,
                )  # fmt: skip
                reports.append(run_parity(config, progress, modes))  # vs torch and goldens
    for report in reports:
        print_report(report, console, per_tap=not args.summary)
    report_dir = args.report or gate.report
    if report_dir is not None:
        for path in write_reports(gate_to_dict(reports), report_dir):
            console.print(f"report: {path}")
    passed = all(r.passed for r in reports)
    console.print(f"gate: {'[green]PASS[/]' if passed else '[bold red]FAIL[/]'} ({gate.source})")
    return EXIT_PASS if passed else EXIT_FAIL


def _cmd_update_goldens(args: argparse.Namespace, console: Console) -> int:
    from parity.harness import RunConfig, Session
    from parity.report import print_golden_moves
    from parity.zoo import list_models

    models = args.model or list_models(include_heavy=False)
    with _progress(console, args.quiet) as progress:
        sessions = [Session(RunConfig(model=m), progress) for m in models]
        moves = [session.golden_moves() for session in sessions]
    for session, move in zip(sessions, moves, strict=True):
        print_golden_moves(session.card.name, move, console)
        if not args.dry_run:
            session.write_goldens()
            console.print(f"wrote {session.goldens_folder}")
    return EXIT_PASS


def _cmd_bundle(args: argparse.Namespace, console: Console) -> int:
    from parity.applicability import not_applicable_reason
    from parity.backends import backend
    from parity.bundle import write_bundle
    from parity.harness import RunConfig, Session
    from parity.lazy import installed
    from parity.variants import VARIANTS, resolve_variants
    from parity.zoo import list_models

    # By default every variant whose backend is installed (a route with its own extra, such
    # as litert-torch, is bundled where it is installed).
    selectors = args.runtime or [
        v.name for v in VARIANTS.values() if not v.reference and installed(backend(v.family).module)
    ]
    variants = [v for v in resolve_variants(selectors) if v.exporter is not None]
    entries, count = [], 0
    with _progress(console, args.quiet) as progress:
        for model in args.model or list_models(include_heavy=False):
            session = Session(RunConfig(model=model), progress)
            # Goldens made from other weights (or inputs) than the artifacts would fail every
            # runtime env that reads the bundle: refuse them here, before any export.
            _ = session.goldens
            applicable = []
            for variant in variants:  # n/a for this card (no Keras twin...): skipped, as run does
                reason = not_applicable_reason(variant, session.card)
                if reason is None:
                    applicable.append(variant)
                else:
                    console.print(f"n/a {model} {variant.name}: {escape(reason)}", soft_wrap=True)
            by_exporter = {v.exporter: v for v in applicable}
            exporters = sorted(e for e in by_exporter if e is not None)
            session.build(applicable)  # in the workers of the frameworks that make them
            artifacts = [session.artifact(by_exporter[e]) for e in exporters]
            count += len(artifacts)
            source, sha = session.weights()
            entries.append(
                (
                    model,
                    source,
                    sha,
                    session.card.preprocess.sha256,
                    artifacts,
                    session.goldens_folder,
                )
            )
        manifest = write_bundle(args.out, entries, progress)
    console.print(f"bundle: {manifest} ({len(entries)} models, {count} artifacts)")
    return EXIT_PASS


def _cmd_eval(args: argparse.Namespace, console: Console) -> int:
    """``parity eval`` and ``parity eval-merge``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from parity import evaluate as ev

    shard = None
    if args.command == "eval" and args.address is not None and args.engine != "ray":
        raise ParityError("--address names a Ray cluster: use it with --engine ray")
    if args.command == "eval-merge":
        results = [ev.read_result(path) for path in args.shards]
        result = ev.merge_results(results, [str(path) for path in args.shards])
    else:
        shard = ev.parse_shard(args.shard) if args.shard else None
        config = ev.EvalConfig(
            data=args.data, model=args.model, runtimes=args.runtime, weights=args.weights,
            shard=shard, limit=args.limit, batch_size=args.batch_size, threads=args.threads,
            rebuild=args.rebuild, device=args.device, jobs=args.jobs, timeout=args.timeout,
        )  # fmt: skip
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn())  # fmt: skip
        with Progress(*columns, console=console, transient=True, disable=args.quiet) as bar:
            task = bar.add_task("preparing", total=None)

            def progress(message: str) -> None:
                if not args.quiet:
                    bar.console.log(escape(message))
                bar.update(task, description=escape(message))

            def on_batch(done: int, total: int) -> None:
                bar.update(task, description="images", completed=done, total=total)

            if args.engine == "ray":
                from parity.evaluate.ray_engine import RayOptions, evaluate_ray

                result = evaluate_ray(config, RayOptions(args.address), progress, on_batch)
            else:
                result = ev.evaluate(config, progress, on_batch)
    ev.print_eval(result, console, args.flips)
    out = args.json or (Path(f"eval-{result.model}-{shard[0]}of{shard[1]}.json") if shard else None)
    if out is not None:
        ev.write_result(result, out)
        console.print(f"JSON: {out}")
    return EXIT_FAIL if result.failed else EXIT_PASS


def _cmd_doctor(args: argparse.Namespace, console: Console) -> int:
    import json

    from rich.table import Table

    from parity.doctor.findings import PROBLEM, evidence_lines
    from parity.doctor.remote import doctor_in_worker
    from parity.errors import RuntimeFailure
    from parity.harness import RunConfig, Session

    session = Session(RunConfig(model=args.model, weights=args.weights))
    options = {
        "calibration": args.calibration, "representative": args.representative,
        "model_object": args.model_object, "preprocess": args.preprocess,
        "images": str(args.images) if args.images else None, "count": args.count,
        "port": str(args.port) if args.port else None,
    }  # fmt: skip
    try:
        findings = doctor_in_worker(session, args.check, options)
    except RuntimeFailure as exc:  # the worker crashed or timed out: a failed run
        console.print(f"[bold red]parity doctor: {escape(str(exc))}[/]")
        return EXIT_FAIL
    table = Table(title=f"parity doctor: {session.card.name}", show_lines=True)
    for column in ("check", "status", "cause / fix", "evidence"):
        table.add_column(column)
    colours = {"ok": "green", "problem": "bold red", "skipped": "yellow"}
    for finding in findings:
        table.add_row(
            finding.name,
            f"[{colours[finding.status]}]{finding.status}[/]",
            escape(finding.cause + (f"\nfix: {finding.fix}" if finding.fix else "")),
            escape("\n".join(evidence_lines(finding))),
        )
    console.print(table)
    if args.json:
        payload = {"model": session.card.name, "findings": [f.to_dict() for f in findings]}
        atomic.write_text(args.json, json.dumps(payload, indent=2) + "\n")
        console.print(f"JSON: {args.json}")
    return EXIT_FAIL if any(f.status == PROBLEM for f in findings) else EXIT_PASS


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``parity`` console script; returns the exit code.

    Called as the process's entry (``argv`` None: the console script, ``python -m
    parity.cli``) it does not return: once every report is written and the standard
    streams are flushed it leaves with :func:`os._exit`, skipping the interpreter teardown
    that costs seconds with torch and TensorFlow loaded. Called with ``argv`` (tests,
    embedding) it returns the code.
    """
    if argv is None:
        _exit_now(_main(sys.argv[1:]))
    return _main(argv)


def _exit_now(code: int) -> NoReturn:
    """Flush stdout/stderr and end the process with ``code``, without interpreter teardown."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing more to say
            stream.flush()
    os._exit(code)


def _main(argv: Sequence[str]) -> int:
    argv = list(argv)
    debug = "--debug" in argv or bool(os.environ.get("PARITY_DEBUG"))
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        argv.insert(0, "run")
    # Piped or in CI, rich would assume 80 columns and squeeze the per-tap tables.
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
    errors = Console(stderr=True, highlight=False)
    try:
        args = _parser().parse_args(argv)  # a bad option: ParityError, one line
        if args.command == "list":
            return list_command(console)
        if args.command == "converters":
            return run_converters_command(args, console)
        if args.command in ("init", "budgets"):
            return run_project_command(args, console)
        if args.command == "check":
            return _cmd_check(args, console)
        if args.command == "update-goldens":
            return _cmd_update_goldens(args, console)
        if args.command == "bundle":
            return _cmd_bundle(args, console)
        if args.command == "doctor":
            return _cmd_doctor(args, console)
        if args.command in ("eval", "eval-merge"):
            return _cmd_eval(args, console)
        return _cmd_run(args, console)
    except ParityError as exc:
        errors.print(f"[bold red]parity: error:[/] {escape(str(exc))}", soft_wrap=True)
        return EXIT_USAGE
    except KeyboardInterrupt:
        errors.print("parity: interrupted")
        return 130
    except Exception as exc:  # a bug in parity, not the user's input nor a failed check
        refused = environment_error(exc)  # unless the machine refused (a full disk)
        if refused is not None:
            errors.print(f"[bold red]parity: error:[/] {escape(str(refused))}", soft_wrap=True)
            return EXIT_USAGE
        if debug:
            errors.print(traceback.format_exc(), markup=False, highlight=False)
        where = _save_traceback()
        errors.print(
            f"[bold red]parity: internal error:[/] {escape(type(exc).__name__)}: "
            f"{escape(str(exc).strip().splitlines()[0] if str(exc).strip() else '')} "
            f"(a bug in parity; traceback: {escape(where)}; --debug shows it)",
            soft_wrap=True,
        )
        return EXIT_INTERNAL


def _save_traceback() -> str:
    """Write the current exception's traceback to a file; its path (or why not)."""
    text = traceback.format_exc()
    try:
        folder = cache_dir() / "logs"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = folder / f"traceback-{stamp}-{os.getpid()}.txt"
        atomic.write_text(path, text)
        return str(path)
    except Exception as exc:  # not even the cache is writable: say so, keep the exit code
        return f"not written ({exc})"


def _add_worker_options(parser: argparse.ArgumentParser) -> None:
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


if __name__ == "__main__":
    sys.exit(main())
