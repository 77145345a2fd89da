"""The ``parity`` command line: the one boundary where exceptions become exit codes.

Exit codes: 0 every check passed; 1 a budget broken or a runtime failed on an artifact;
2 usage error or bad input (unknown model, missing or corrupt file, a full disk, ...),
reported in one line; 3 an internal error (a bug in parity): one line saying where the
traceback was written (``--debug`` prints it instead). 130 interrupted.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
from collections.abc import Sequence
from typing import NoReturn

from rich.console import Console
from rich.markup import escape

from parity import atomic, cli_commands
from parity.cli_converters import run_command as run_converters_command
from parity.cli_parser import EXIT_INTERNAL, EXIT_USAGE, build_parser
from parity.cli_project import list_command
from parity.cli_project import run_command as run_project_command
from parity.errors import ParityError, environment_error
from parity.paths import cache_dir


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
        args = build_parser().parse_args(argv)  # a bad option: ParityError, one line
        if args.command == "list":
            return list_command(console)
        if args.command == "converters":
            return run_converters_command(args, console)
        if args.command in ("init", "budgets"):
            return run_project_command(args, console)
        if args.command == "check":
            return cli_commands.check_command(args, console)
        if args.command == "update-goldens":
            return cli_commands.update_goldens_command(args, console)
        if args.command == "bundle":
            return cli_commands.bundle_command(args, console)
        if args.command == "doctor":
            return cli_commands.doctor_command(args, console)
        if args.command in ("eval", "eval-merge"):
            return cli_commands.eval_command(args, console)
        return cli_commands.run_command(args, console)
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


if __name__ == "__main__":
    sys.exit(main())
