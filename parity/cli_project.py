"""The project commands of the CLI: ``parity init``, ``parity budgets`` and ``parity list``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from parity.errors import ParityError


def add_parsers(commands: Any) -> None:
    """Register ``init`` and ``budgets`` on the CLI's subcommand parsers."""
    init = commands.add_parser(
        "init",
        help="scaffold a parity project in the current directory",
        description="Write a [tool.parity] table (pyproject.toml, else parity.toml), "
        "parity/models/ with a commented example card, parity/fixtures/ seeded with the "
        "bundled images (or --fixtures DIR: your own), parity/tolerances.toml extending the "
        "bundled budgets, and .gitignore lines for obtained arrays and reports.",
    )
    init.add_argument("--fixtures", type=Path, metavar="DIR", help="use your own image folder")
    budgets = commands.add_parser(
        "budgets",
        help="measure a model's noise floor and write budgets from it",
        description="Run every applicable variant chosen against torch in worker processes "
        "(fp32-class variants at 1 and 2 threads) and print one rule per tap and precision "
        "class, never pooling classes: fp32 5x above its floor (refused when that is over "
        "50x the class's median floor or 1e-2, unless --allow-loose), other classes 2.5x the "
        "error, SQNR - 3 dB; each rule names the variants it was measured on and judges.",
    )
    budgets.add_argument("--model", "-m", required=True, help="model card name or .toml path")
    budgets.add_argument(
        "--runtime", "-r", action="append", metavar="R", help="variants or families (default: all)"
    )
    budgets.add_argument(
        "--write",
        nargs="?",
        const=True,
        metavar="FILE",
        help="write the rules into FILE (default: the project's tolerance file)",
    )
    budgets.add_argument(
        "--allow-loose",
        action="store_true",
        help="write an fp32 budget far above the measured floor (recorded in its note)",
    )
    budgets.add_argument("--quiet", "-q", action="store_true", help="no progress messages")


def run_command(args: argparse.Namespace, console: Console) -> int:
    """Run ``init`` or ``budgets``; returns the exit code."""
    if args.command == "init":
        from parity.scaffold import init_project

        for line in init_project(Path.cwd(), args.fixtures):
            console.print(escape(line), soft_wrap=True)
        console.print("next: add a card in parity/models/, then `parity check`")
        return 0
    from parity.budgets import measure, rules_text, write_rules
    from parity.paths import find_project

    progress = (lambda message: None) if args.quiet else console.log
    measured = measure(args.model, args.runtime, progress)
    if measured.failed:
        for line in measured.failed:
            console.print(f"[bold red]runtime failed[/] {escape(line)}")
        console.print("nothing written: a budget needs every chosen variant measured")
        return 1
    text = rules_text(measured, allow_loose=args.allow_loose)
    console.print(escape(text), end="")
    if args.write:
        project = find_project()
        if args.write is True and project.root is None:
            raise ParityError(
                f"{project.tolerances}: the bundled tolerance file; run `parity init` for a "
                "project tolerance file, or pass --write FILE"
            )
        target = project.tolerances if args.write is True else Path(args.write)
        write_rules(target, measured.model, text)
        console.print(f"wrote {target}")
    return 0


def list_command(console: Console) -> int:
    """``parity list``: the project config, cards, variants and fixture images."""
    from rich.table import Table

    from parity.applicability import missing_converter
    from parity.fixtures import load_fixtures
    from parity.lazy import installed
    from parity.paths import find_project
    from parity.variants import VARIANTS
    from parity.zoo import card_paths, load_card

    project = find_project()
    fixtures_dir = project.fixtures
    console.print(f"config: {project.config_label}")
    console.print(f"tolerances: {project.tolerances}")
    models = Table(title="models", title_justify="left")
    for column in ("name", "builder", "weights", "taps", "input", "heavy", "card"):
        models.add_column(column)
    for path in card_paths().values():
        card = load_card(path)
        models.add_row(
            card.name, card.builder, card.weights, str(len(card.taps)),
            "x".join(map(str, card.input_shape[1:])), "yes" if card.heavy else "", str(path),
        )  # fmt: skip
    variants = Table(title="runtime variants", title_justify="left")
    for column in ("name", "family", "precision", "artifact", "installed", "description"):
        variants.add_column(column)
    for v in VARIANTS.values():
        converter = missing_converter(v)
        ok = "[green]yes[/]" if installed(v.module) else "[red]no[/]"
        if installed(v.module) and converter is not None:
            ok = f"[red]no[/]: {converter.install_command}"
        variants.add_row(v.name, v.family, v.precision, v.exporter or "-", ok, v.description)
    images = Table(title=f"fixtures ({fixtures_dir})", title_justify="left")
    for column in ("name", "role", "file"):
        images.add_column(column)
    for fixture in load_fixtures(fixtures_dir):
        images.add_row(fixture.name, fixture.role, str(fixture.path.relative_to(fixtures_dir)))
    for table in (models, variants, images):
        console.print(table)
    return 0
