"""The stage commands of the CLI: ``run``, ``check``, ``update-goldens``, ``bundle``,
``eval`` / ``eval-merge`` and ``doctor``; each returns an exit code (:mod:`parity.cli`)."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from parity import atomic
from parity.cli_parser import EXIT_FAIL, EXIT_PASS
from parity.errors import ParityError


def run_command(args: argparse.Namespace, console: Console) -> int:
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


def check_command(args: argparse.Namespace, console: Console) -> int:
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


def update_goldens_command(args: argparse.Namespace, console: Console) -> int:
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


def bundle_command(args: argparse.Namespace, console: Console) -> int:
    from parity.backends import backend, get_exporter
    from parity.bundle import write_bundle
    from parity.harness import RunConfig, Session
    from parity.lazy import installed
    from parity.plan import plan
    from parity.variants import VARIANTS, resolve_variants
    from parity.zoo import list_models

    # By default every variant whose backend is installed (a route with its own extra, such
    # as litert-torch, is bundled where it is installed), but not machine code compiled for
    # this CPU (torch_compile's package): a bundle is for other machines.
    selectors = args.runtime or [
        v.name for v in VARIANTS.values()
        if not v.reference and installed(backend(v.family).module)
        and not (v.exporter and get_exporter(v.exporter).keyed_on_cpu)
    ]  # fmt: skip
    variants = [v for v in resolve_variants(selectors) if v.exporter is not None]
    entries, count = [], 0
    with _progress(console, args.quiet) as progress:
        for model in args.model or list_models(include_heavy=False):
            session = Session(RunConfig(model=model), progress)
            # Goldens made from other weights (or inputs) than the artifacts would fail every
            # runtime env that reads the bundle: refuse them here, before any export.
            _ = session.goldens
            planned = plan(session.card, variants)
            applicable = list(planned.applicable)
            for variant, reason in planned.not_applicable:  # n/a (no Keras twin...): skipped
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


def eval_command(args: argparse.Namespace, console: Console) -> int:
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


def doctor_command(args: argparse.Namespace, console: Console) -> int:
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
