"""The terminal view of an evaluation: the accuracy/agreement table and each variant's flips."""

from __future__ import annotations

from typing import Any

from parity.evaluate.results import EvalResult


def print_eval(result: EvalResult, console: Any, max_flips: int = 10) -> None:
    """The accuracy/agreement table, then each variant's flips (largest torch margin first)."""
    from rich.markup import escape
    from rich.table import Table

    dataset = result.dataset
    names = {index: folder for folder, index in dataset.get("classes", {}).items()}
    what = f"{len(result.indices)} of {dataset['total']} images"
    if dataset.get("limit") is not None:
        what += f" (--limit {dataset['limit']})"
    if result.shard:
        what += f" (shard {result.shard['k']}/{result.shard['n']})"
    console.print(
        f"[bold]{result.model}[/] on {escape(str(dataset['root']))}: {what}; classes by "
        f"{dataset['mapping']}; weights {escape(result.weights['source'])} "
        f"({result.weights['sha256'][:12]})"
    )
    reference = result.scores[0]
    table = Table(title="dataset-level parity vs torch", title_justify="left")
    width = max(len(s.name) for s in result.scores)
    table.add_column("variant", no_wrap=True, min_width=width)
    for column in ("images", "accuracy", "Δ vs torch", "top-1 agreement", "flips", "images/s"):
        table.add_column(column, justify="right")
    table.add_column("status")
    for score in result.scores:
        drop = (score.accuracy - reference.accuracy) * 100
        status = f"[red]{escape(score.error)}[/]" if score.error else "[green]ok[/]"
        if score.not_applicable:
            status = f"[yellow]n/a: {escape(score.not_applicable)}[/]"
        table.add_row(
            score.name,
            str(score.images),
            f"{score.accuracy:.2%}",
            "—" if score is reference else f"{drop:+.2f} pp",
            f"{score.agreement:.2%}",
            str(len(score.flips)),
            f"{score.images_per_s:.1f}",
            status,
        )
    console.print(table)
    for score in result.scores:
        if not score.flips or max_flips <= 0:
            continue
        flips = sorted(score.flips, key=lambda f: (-f["margin"], f["index"]))
        shown = Table(
            title=f"{score.name}: {len(flips)} flips vs torch (largest torch margin first)",
            title_justify="left",
        )
        shown.add_column("image", no_wrap=True, min_width=max(len(f["path"]) for f in flips))
        for column in ("label", "torch", score.name, "torch margin", "runtime margin"):
            shown.add_column(column, justify="right")
        for flip in flips[:max_flips]:
            shown.add_row(
                escape(flip["path"]),
                *(escape(str(names.get(flip[k], flip[k]))) for k in ("label", "torch", "runtime")),
                f"{flip['margin']:.3g}",
                f"{flip['runtime_margin']:.3g}",
            )
        if len(flips) > max_flips:
            shown.caption = f"... and {len(flips) - max_flips} more (all in --json)"
        console.print(shown)
