"""``parity converters``: list the converter environments, make one."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.markup import escape

from parity.errors import RuntimeFailure

#: Exit codes (as in :mod:`parity.cli_parser`).
_FAILED = 1


def add_parser(commands: Any) -> None:
    """Register ``converters {list,install}`` on the CLI's subcommand parsers."""
    converters = commands.add_parser(
        "converters",
        help="converter environments (onnx2tf): list them, make one",
        description="A converter whose pinned stack clashes with parity's (onnx2tf: "
        "TensorFlow 2.19, numpy 1.26) runs in its own venv under parity's cache, made once "
        "from the exact pins shipped in parity/converters/NAME.toml and keyed by their hash "
        "and the Python version. Its variants are n/a until it is made. pip installs from its "
        "configured index and find-links (pip.conf, PIP_* variables); --find-links and "
        "--no-index make it offline. Nothing is downloaded when parity runs a converter.",
    )
    actions = converters.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser("list", help="each converter, its pins' key and whether it is made here")
    install = actions.add_parser(
        "install",
        help="make a converter's environment (pip install of its exact pins, pip check, "
        "import check)",
    )
    install.add_argument("name", help="the converter (parity converters list names them)")
    install.add_argument(
        "--find-links", action="append", default=[], metavar="DIR",
        help="a folder of wheels (or URL) for pip, as pip's own --find-links",
    )  # fmt: skip
    install.add_argument("--no-index", action="store_true", help="pip uses --find-links only")
    install.add_argument(
        "--force", action="store_true", help="make it again even if it is already made"
    )


def run_command(args: argparse.Namespace, console: Console) -> int:
    """Run ``converters list`` or ``converters install``; returns the exit code."""
    from parity.converters import spec, specs

    if args.action == "list":
        from rich.table import Table

        table = Table(title="converter environments", title_justify="left")
        for column in ("name", "key", "made", "description"):
            table.add_column(column)
        for s in specs().values():
            made = s.installed()
            where = f"[green]{escape(str(made))}[/]" if made else f"no: {s.install_command}"
            table.add_row(s.name, s.key(), where, s.description)
        console.print(table)
        return 0
    from parity.converters.environment import install

    chosen = spec(args.name)
    try:
        record = install(
            chosen, args.find_links, args.no_index, args.force,
            lambda line: console.print(escape(line), soft_wrap=True),
        )  # fmt: skip
    except RuntimeFailure as exc:
        console.print(f"[bold red]failed[/] {escape(str(exc))}", soft_wrap=True)
        return _FAILED
    console.print(
        f"{chosen.name}: ready at {chosen.path()} ({record['bytes'] / 2**20:.0f} MiB, made in "
        f"{record['seconds']} s, {len(record['installed'])} packages)"
    )
    return 0
