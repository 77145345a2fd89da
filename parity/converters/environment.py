"""Making a converter environment, and running a converter in it as a subprocess.

:func:`install` makes the venv in place (``python -m venv``, ``pip install`` of the
spec's exact pins, ``pip check``, the spec's import check) and writes the marker
(:data:`parity.converters.MARKER`) last: a folder without it is a failed or interrupted
install, removed and made again by the next ``install``. :func:`run_converter` runs a
command in the environment's Python with a timeout, its output in a log file, and turns a
crash or an overrun into one :class:`~parity.errors.RuntimeFailure` line naming the log.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from parity import atomic
from parity.converters import MARKER, ConverterSpec, running_python
from parity.errors import ParityError, RuntimeFailure
from parity.paths import cache_dir

#: Proxies that lead nowhere: a converter that tries the network fails at once, visibly,
#: instead of hanging or depending on a download.
OFFLINE_ENV = {
    key: "http://127.0.0.1:9"
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy")
}


def python_of(env: Path) -> Path:
    return env / "bin" / "python"


def _environ(offline: bool) -> dict[str, str]:
    """This process's environment without what would leak parity's Python into the
    converter's (``PYTHONPATH``, ``PYTHONHOME``, ...), with no network when ``offline``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    if offline:
        environ.update(OFFLINE_ENV, NO_PROXY="", no_proxy="")
    return environ


def _step(cmd: Sequence[str | Path], log: Path, what: str, timeout: float | None) -> None:
    """Run one install step, appending its output to ``log``; a failure is one line."""
    with log.open("a") as out:
        out.write(f"$ {' '.join(map(str, cmd))}\n")
        out.flush()
        offset = out.tell()
        try:
            done = subprocess.run(
                [str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, timeout=timeout,
                env=_environ(offline=False),
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise RuntimeFailure(f"{what}: over {timeout:g} s; log: {log}") from None
    if done.returncode != 0:
        why = last_error(log, offset)
        raise RuntimeFailure(f"{what} failed (exit {done.returncode}): {why}; log: {log}")


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def install(
    spec: ConverterSpec,
    find_links: Sequence[str] = (),
    no_index: bool = False,
    force: bool = False,
    progress: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Make ``spec``'s environment (unless it is already complete and not ``force``);
    returns its record (path, key, seconds, bytes, the installed versions)."""
    python = running_python()
    if python not in spec.python:
        raise ParityError(
            f"converter {spec.name!r} was tested on Python {', '.join(spec.python)}; this is "
            f"Python {python}: its pins may not install here"
        )
    env = spec.path()
    if (env / MARKER).is_file() and not force:
        record: dict[str, Any] = json.loads((env / MARKER).read_text())
        progress(f"{spec.name}: already made at {env}")
        return record
    if env.exists():
        progress(f"{spec.name}: removing the incomplete environment at {env}")
        shutil.rmtree(env)
    env.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    progress(f"{spec.name}: making {env}")
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run(
        [base, "-m", "venv", str(env)], check=True, capture_output=True, env=_environ(True)
    )
    log = env / "install.log"
    (env / "requirements.txt").write_text("\n".join(spec.requirements) + "\n")
    pip: list[str | Path] = [python_of(env), "-m", "pip"]
    options = [f"--find-links={link}" for link in find_links] + (["--no-index"] if no_index else [])
    progress(f"{spec.name}: pip install of {len(spec.requirements)} pinned requirements")
    _step([*pip, "install", "--no-input", "-r", env / "requirements.txt", *options], log,
          f"pip install for converter {spec.name}", None)  # fmt: skip
    _step([*pip, "check"], log, f"pip check in converter {spec.name}", 300)
    progress(f"{spec.name}: checking `{spec.check}`")
    _step([python_of(env), "-c", spec.check], log, f"{spec.name} import check", 600)
    freeze = subprocess.run(
        [*map(str, pip), "freeze"], capture_output=True, text=True, check=True,
        env=_environ(offline=True),
    )  # fmt: skip
    record = {
        "name": spec.name,
        "key": spec.key(),
        "python": python,
        "seconds": round(time.perf_counter() - start, 1),
        "bytes": _size(env),
        "installed": freeze.stdout.split(),
    }
    atomic.write_text(env / MARKER, json.dumps(record, indent=2) + "\n")
    return record


#: Terminal colour codes (onnx2tf colours its messages).
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: The last line of a Python traceback: ``package.SomeError: what``.
_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")


def last_error(log: Path, offset: int = 0) -> str:
    """The line of ``log`` (from byte ``offset``) that says what went wrong: the last
    exception a traceback names, else the last line naming an error, else the last line."""
    with log.open("rb") as f:
        f.seek(offset)
        text = _ANSI.sub("", f.read().decode(errors="replace"))
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    raised = [ln for ln in lines if _RAISED.match(ln)]
    named = [ln for ln in lines if "error" in ln.lower() or "exception" in ln.lower()]
    return (raised or named or lines or ["(no output)"])[-1][:300]


def _kept(log: Path, name: str) -> Path:
    """A copy of a failed run's log under the cache's logs (the artifact's folder, where
    the converter ran, is removed when its export fails)."""
    kept = (
        cache_dir()
        / "logs"
        / f"converter-{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    )
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(log, kept)
    return kept


def run_converter(
    spec: ConverterSpec, args: Sequence[str], cwd: Path, log: Path, timeout: float
) -> float:
    """Run ``python ARGS`` in ``spec``'s environment in ``cwd`` (no network), output to
    ``log``; returns the seconds it took. A missing environment, a crash or an overrun is
    a :class:`RuntimeFailure` (a failed variant) in one line."""
    env = spec.installed()
    if env is None:
        raise RuntimeFailure(spec.absent_reason() or spec.name)
    environ = _environ(offline=True)  # and its bin/ first on PATH, as when activated:
    environ["PATH"] = os.pathsep.join([str(env / "bin"), environ.get("PATH", "")])
    environ["VIRTUAL_ENV"] = str(env)  # converters call their own tools (onnx2tf: onnxsim)
    start = time.perf_counter()
    with log.open("w") as out:
        try:
            done = subprocess.run(
                [str(python_of(env)), *args], cwd=cwd, env=environ, stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=timeout,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            raise RuntimeFailure(
                f"converter {spec.name}: over its {timeout:g} s limit, killed; "
                f"log: {_kept(log, spec.name)}"
            ) from None
    if done.returncode != 0:
        raise RuntimeFailure(
            f"converter {spec.name} failed (exit {done.returncode}): {last_error(log)}; "
            f"log: {_kept(log, spec.name)}"
        )
    return time.perf_counter() - start
