"""The parent process never imports a framework, whatever the command (frameworks live in
the workers: ../shared/DESIGN.md "Processes").

Each subcommand runs in a fresh interpreter with an import audit hook (``sys.addaudithook``)
that records the first import of each framework and the stack that made it; the
assertion names the command, the framework and where it came from.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from parity.paths import find_project

FRAMEWORKS = ("torch", "torchvision", "tensorflow", "keras", "onnxruntime", "openvino")
MODEL = "mobilenet_v2"

#: Runs ``parity.cli.main(argv)`` in this interpreter; writes what the parent imported.
AUDIT = f"""
import json, sys, traceback
FRAMEWORKS = {FRAMEWORKS!r}
seen = {{}}

def audit(event, args):
    if event == "import":
        top = str(args[0]).split(".")[0]
        if top in FRAMEWORKS and top not in seen:
            seen[top] = "".join(traceback.format_stack(limit=14)[:-1])

sys.addaudithook(audit)
from parity.cli import main
code = main(sys.argv[2:])
loaded = [m for m in FRAMEWORKS if m in sys.modules]
with open(sys.argv[1], "w") as out:
    json.dump({{"code": code, "loaded": loaded, "where": seen}}, out)
"""


def _dataset(root: Path) -> Path:
    """Four fixture images in two class folders (an ImageFolder for ``parity eval``)."""
    images = sorted((find_project().fixtures / "images").glob("*.png"))[:4]
    for index, image in enumerate(images):
        folder = root / str(index % 2)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, folder / image.name)
    return root


def _commands(tmp: Path) -> dict[str, list[str]]:
    """subcommand -> its argv (each passes on this machine: exit 0)."""
    ort = ["--model", MODEL, "--runtime", "ort_torchscript"]
    return {
        "list": ["list"],
        "init": ["init"],
        "run": ["run", *ort, "--jobs", "1"],
        "check": ["check", *ort, "--report", str(tmp / "report")],
        "bundle": ["bundle", *ort, "--out", str(tmp / "bundle")],
        "update-goldens": ["update-goldens", "--model", MODEL, "--dry-run"],
        "doctor": ["doctor", "--model", MODEL, "--check", "batchnorm", "--count", "2"],
        "eval": ["eval", "--data", str(_dataset(tmp / "data")), *ort, "--limit", "4"],
        "budgets": ["budgets", *ort],
        "converters": ["converters", "list"],
    }


@pytest.mark.onnxruntime
@pytest.mark.parametrize(
    "command",
    [
        "list",
        "init",
        "run",
        "check",
        "bundle",
        "update-goldens",
        "doctor",
        "eval",
        "budgets",
        "converters",
    ],
)
def test_the_parent_imports_no_framework(command: str, tmp_path: Path) -> None:
    argv = _commands(tmp_path)[command]
    out = tmp_path / "audit.json"
    cwd = tmp_path / "project" if command == "init" else Path.cwd()
    cwd.mkdir(exist_ok=True)
    done = subprocess.run(
        [sys.executable, "-c", AUDIT, str(out), *argv],
        cwd=cwd, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.is_file(), f"parity {command} died: {done.stderr[-3000:]}"
    audit = json.loads(out.read_text())
    assert audit["code"] == 0, f"parity {command}: exit {audit['code']}\n{done.stderr[-3000:]}"
    where = "\n".join(f"{name} imported from:\n{stack}" for name, stack in audit["where"].items())
    assert audit["loaded"] == [], f"parity {command} imported {audit['loaded']} here\n{where}"
