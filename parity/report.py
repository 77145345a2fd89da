"""Reports of a parity run: terminal tables (rich) and JSON."""

from __future__ import annotations

import datetime
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from parity import __version__, atomic
from parity.compare import TapVerdict, metrics_to_dict
from parity.golden import GoldenMoves
from parity.preprocess import describe
from parity.result import NOT_APPLICABLE, ParityReport, VariantResult


def _fmt(value: float | None, spec: str = ".2e") -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "inf"
    return format(value, spec)


def _budget(tap: TapVerdict, key: str, spec: str = ".0e") -> str:
    limit = tap.budget.limits.get(key)
    return "" if limit is None else f" / {format(limit, spec)}"


def result_label(result: VariantResult) -> str:
    """``ort_dynamo vs torch`` (live) or ``ort_dynamo vs golden`` (regression)."""
    return f"{result.variant.name} vs {'torch' if result.mode == 'live' else 'golden'}"


def _cosine_budget(tap: TapVerdict) -> str:
    limit = tap.budget.limits.get("min_cosine")
    return "" if limit is None else f" / {1.0 - limit:.0e}"


def tap_table(result: VariantResult, image_names: list[str]) -> Table:
    """Per-tap table of one variant: metric vs budget, status, worst image."""
    assert result.verdict is not None
    table = Table(title=f"{result_label(result)}: per-tap", title_justify="left")
    table.add_column("tap")
    table.add_column("scale", justify="right", style="dim")
    table.add_column("max_abs_norm / budget", justify="right")
    table.add_column("1-cosine / budget", justify="right")
    table.add_column("SQNR dB", justify="right")
    table.add_column("top-1 / top-5", justify="right")
    table.add_column("worst image", style="dim")
    table.add_column("status")
    first = result.verdict.first_failure
    for tap in result.verdict.taps:
        m = tap.metrics
        status = "[green]ok[/]" if tap.passed else "[bold red]FAIL[/]"
        if tap is first:
            status += " [bold red]<- first[/]"
        topk = (
            f"{m.top1_agreement:.2f} / {m.top5_overlap:.2f}" if m.top1_agreement is not None else ""
        )
        table.add_row(
            tap.tap.name,
            _fmt(m.scale, ".3g"),
            _fmt(m.max_abs_norm) + _budget(tap, "max_abs_norm"),
            _fmt(1.0 - m.cosine, ".1e") + _cosine_budget(tap),
            _fmt(m.sqnr_db, ".1f"),
            topk,
            image_names[m.worst_image] if image_names else str(m.worst_image),
            status,
        )
    return table


def summary_table(report: ParityReport) -> Table:
    """One row per variant: verdict, first divergent tap, time, artifact."""
    table = Table(title=f"parity {report.card.name}: summary", title_justify="left")
    table.add_column("variant")
    table.add_column("vs")
    table.add_column("precision")
    table.add_column("verdict")
    table.add_column("first divergent tap / error")
    table.add_column("worst max_abs_norm", justify="right")
    table.add_column("time", justify="right")
    table.add_column("artifact", style="dim")
    for result in report.results:
        artifact = ""
        if result.artifact is not None:
            origin = "built" if result.artifact.built else "cached"
            origin = "made elsewhere" if result.artifact.exporter == "external" else origin
            artifact = f"{result.artifact.size_bytes / 1e6:.1f} MB, {origin}"
        vs = "torch" if result.mode == "live" else "golden"
        precision = escape(precision_label(result))
        if result.status == NOT_APPLICABLE:
            table.add_row(
                result.variant.name, vs, precision, "[yellow]n/a[/]", escape(result.reason or "")
            )
            continue
        if result.error is not None:
            table.add_row(
                result.variant.name, vs, precision, "[bold red]ERROR[/]", escape(result.error),
                "", "", artifact,
            )  # fmt: skip
            continue
        assert result.verdict is not None
        first = result.verdict.first_failure
        worst = max(t.metrics.max_abs_norm for t in result.verdict.taps)
        table.add_row(
            result.variant.name,
            vs,
            precision,
            "[green]PASS[/]" if result.passed else "[bold red]FAIL[/]",
            "-" if first is None else escape(f"{first.tap.name}: {'; '.join(first.failures)}"),
            _fmt(worst),
            f"{result.seconds:.1f} s",
            artifact,
        )
    return table


def precision_label(result: VariantResult) -> str:
    """The class that judged a variant, and what it ran in where the runtime said."""
    declared = result.variant.precision
    if result.executed is None:
        return declared
    return f"{declared}, ran {result.executed.split(' (')[0]}"


def print_report(report: ParityReport, console: Console, per_tap: bool = True) -> None:
    """The terminal report: header, per-tap tables, summary, one-line explanations."""
    console.print(
        f"[bold]{report.card.name}[/] weights {report.weights_source} "
        f"(sha256 {report.weights_sha256[:12]}), {len(report.fixtures)} images, "
        f"{len(report.taps)} taps"
    )
    console.print(
        f"preprocess {describe(report.card.preprocess)} (sha256 "
        f"{report.card.preprocess.sha256[:12]}), input sha256 {report.input_sha256[:12]}",
        style="dim",
    )
    console.print(f"config {report.config or '-'}; tolerances {report.tolerances}", style="dim")
    if report.reference_source:
        console.print(
            f"reference: {report.reference_source}"
            + (
                f" ({report.reference_seconds:.2f} s)"
                if report.reference_source == "computed"
                else ""
            ),
            style="dim",
        )
    if not report.measured_budgets:
        console.print(budgets_note(report.card.name), style="yellow")
    names = report.image_names
    for result in report.results:
        for line in result.artifact.metadata.get("notes", []) if result.artifact else []:
            console.print(escape(line), style="dim", soft_wrap=True)  # a file made elsewhere
        if per_tap and result.verdict is not None:
            console.print(tap_table(result, names))
    console.print(summary_table(report))
    for result in report.results:
        if result.verdict is not None and not result.passed:
            console.print(
                f"[bold red]{result_label(result)}[/]: {escape(result.verdict.explain(names))}"
            )
    skipped = [r for r in report.results if r.status == NOT_APPLICABLE]
    if skipped and report.strict:
        console.print(f"[bold red]strict[/]: {len(skipped)} variant(s) n/a fail the run")
    verdict = "[green]PASS[/]" if report.passed else "[bold red]FAIL[/]"
    console.print(f"{verdict} in {report.wall_seconds:.1f} s (tolerances: {report.tolerances})")


def budgets_note(model: str) -> str:
    """The header line of a model judged by the default budgets only."""
    return (
        f"budgets: no measured budget for {model}, judged by the default '*/*/*' rules; "
        f"measure them with `parity budgets --model {model}`"
    )


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def report_to_dict(report: ParityReport) -> dict[str, Any]:
    """The JSON form of a run: provenance, then per-variant per-tap metrics and budgets."""
    variants = []
    for result in report.results:
        entry: dict[str, Any] = {
            "name": result.variant.name,
            "family": result.variant.family,
            "precision": result.variant.precision,
            "executed": result.executed,
            "tensors": dict(result.located),
            "mode": result.mode,
            "status": result.status,
            "passed": result.passed,
            "seconds": round(result.seconds, 4),
            "error": result.error,
            "reason": result.reason,
            "artifact": None
            if result.artifact is None
            else {"path": str(result.artifact.path), **result.artifact.metadata},
        }
        if result.verdict is not None:
            first = result.verdict.first_failure
            entry["first_divergent_tap"] = None if first is None else first.tap.name
            entry["explanation"] = result.verdict.explain(report.image_names)
            entry["taps"] = [
                {
                    **t.tap.to_dict(),
                    "passed": t.passed,
                    "failures": list(t.failures),
                    "metrics": metrics_to_dict(t.metrics),
                    "worst_image_name": report.image_names[t.metrics.worst_image],
                    "budget": dict(t.budget.limits),
                    "budget_sources": dict(t.budget.sources),
                }
                for t in result.verdict.taps
            ]
        variants.append(entry)
    return _json_safe(
        {
            "parity_version": __version__,
            "model": report.card.name,
            "passed": report.passed,
            "weights": {"source": report.weights_source, "sha256": report.weights_sha256},
            "preprocess": {
                "spec": report.card.preprocess.to_dict(),
                "sha256": report.card.preprocess.sha256,
            },
            "input_sha256": report.input_sha256,
            "images": [
                {"name": f.name, "path": str(f.path), "sha256": f.sha256} for f in report.fixtures
            ],
            "tolerances": report.tolerances,
            "config": report.config,
            "measured_budgets": report.measured_budgets,
            "strict": report.strict,
            "reference_seconds": round(report.reference_seconds, 4),
            "reference": report.reference_source,
            "wall_seconds": round(report.wall_seconds, 3),
            "variants": variants,
        }
    )


def write_json(data: dict[str, Any], path: Path) -> None:
    """Write JSON atomically (temp file in the same folder, then rename)."""
    atomic.write_text(Path(path), json.dumps(data, indent=2) + "\n")


def print_golden_moves(model: str, moves: GoldenMoves, console: Console) -> None:
    """What an update of the goldens changes: provenance lines and per-tap movement."""
    if not moves.exists:
        console.print(f"[bold]{model}[/]: no goldens yet; writing new ones")
        return
    console.print(f"[bold]{model}[/]: " + ("; ".join(moves.changes) or "provenance unchanged"))
    table = Table(title=f"{model}: new torch reference vs stored golden", title_justify="left")
    for column in ("tap", "max_abs_norm", "1-cosine", "SQNR dB", "moved"):
        table.add_column(column, justify="left" if column == "tap" else "right")
    for tap, m in moves.taps.items():
        moved = m.max_abs_norm > 0 or m.cosine < 1.0 - 1e-12
        table.add_row(
            tap, _fmt(m.max_abs_norm), _fmt(1.0 - m.cosine, ".1e"), _fmt(m.sqnr_db, ".1f"),
            "[yellow]yes[/]" if moved else "no",
        )  # fmt: skip
    console.print(table)


def gate_to_dict(reports: Sequence[ParityReport]) -> dict[str, Any]:
    """The JSON form of a gate run over several models (input to every renderer)."""
    return {
        "parity_version": __version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "passed": all(r.passed for r in reports),
        "models": [report_to_dict(r) for r in reports],
    }


def _check_key(variant: dict[str, Any]) -> tuple[str, str, str]:
    """One check of a merged report: a variant in a mode; a file made elsewhere by its path
    (every shipped TFLite file is an ``external_litert``)."""
    artifact = variant.get("artifact") or {}
    path = str(artifact.get("path", "")) if artifact.get("exporter") == "made elsewhere" else ""
    return variant["name"], variant["mode"], path


def merge_gates(gates: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One gate dict from several (pytest-xdist workers): each model's variants together."""
    models: dict[str, dict[str, Any]] = {}
    for gate in gates:
        for model in gate["models"]:
            if model["model"] not in models:
                models[model["model"]] = {**model, "variants": []}
            merged = models[model["model"]]
            seen = {_check_key(v) for v in merged["variants"]}
            new = [v for v in model["variants"] if _check_key(v) not in seen]
            merged["variants"] += new
            merged["passed"] = merged["passed"] and model["passed"]
            merged["wall_seconds"] = max(merged["wall_seconds"], model["wall_seconds"])
    return {
        **gates[0],
        "passed": all(m["passed"] for m in models.values()),
        "models": list(models.values()),
    }


def write_reports(gate: dict[str, Any], folder: Path) -> list[Path]:
    """Write ``report.json``, ``summary.md``, ``junit.xml``, ``report.html`` and the Model
    Explorer overlays (:mod:`parity.render.overlay`) into ``folder``."""
    from parity.render import render_html, render_junit, render_markdown
    from parity.render.overlay import write_overlays

    folder = Path(folder)
    write_json(gate, folder / "report.json")
    paths = [folder / "report.json"]
    for name, render in (
        ("summary.md", render_markdown),
        ("junit.xml", render_junit),
        ("report.html", render_html),
    ):
        atomic.write_text(folder / name, render(gate))
        paths.append(folder / name)
    for model in gate.get("models") or ():
        paths += write_overlays(model, folder)
    return paths


def write_routes(model: dict[str, Any], folder: Path) -> list[Path]:
    """Write one model's route table (``routes.md``, ``.json``, ``.html``) and its Model
    Explorer overlays into ``folder``."""
    from parity.render.overlay import write_overlays
    from parity.render.routes import (
        render_routes_html,
        render_routes_json,
        render_routes_markdown,
    )

    folder = Path(folder)
    paths = []
    for name, render in (
        ("routes.md", render_routes_markdown),
        ("routes.json", render_routes_json),
        ("routes.html", render_routes_html),
    ):
        atomic.write_text(folder / name, render(model))
        paths.append(folder / name)
    return paths + write_overlays(model, folder)


def routes_table(model: dict[str, Any]) -> Table:
    """The route comparison of one model's report dict (:mod:`parity.render.routes`)."""
    from parity.render.routes import COLUMNS, format_cell, route_rows

    table = Table(title=f"parity {model['model']}: routes", title_justify="left")
    for title, _ in COLUMNS:
        table.add_column(title)
    for row in route_rows(model):
        table.add_row(*(escape(format_cell(row[key])) for _, key in COLUMNS))
    return table
