"""The parent process never imports a framework, whatever the command (frameworks live in
the workers: ../shared/DESIGN.md "Processes").

Every subcommand runs, one after the other, in one fresh interpreter with an import audit
hook (``sys.addaudithook``) that records the first import of each framework, the command
running then and the stack that made it; the assertion names the command, the framework
and where it came from. (One interpreter for all: a framework a command imported stays in
``sys.modules``, so each command is still seen importing it first or not at all.)
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

#: Runs ``parity.cli.main(argv)`` for each command in this interpreter (in its folder);
#: writes each exit code, what the parent imported, which command imported it and where.
AUDIT = f"""
import json, os, sys, traceback
FRAMEWORKS = {FRAMEWORKS!r}
seen, running = {{}}, [None]

def audit(event, args):
    if event == "import":
        top = str(args[0]).split(".")[0]
        if top in FRAMEWORKS and top not in seen:
            stack = "".join(traceback.format_stack(limit=14)[:-1])
            seen[top] = f"{{running[0]}}: {{stack}}"

sys.addaudithook(audit)
from parity.cli import main
codes = {{}}
for name, cwd, argv in json.loads(sys.argv[2]):
    running[0] = name
    os.chdir(cwd)
    try:
        codes[name] = main(argv)
    except SystemExit as exit:
        codes[name] = exit.code
loaded = [m for m in FRAMEWORKS if m in sys.modules]
with open(sys.argv[1], "w") as out:
    json.dump({{"codes": codes, "loaded": loaded, "where": seen}}, out)
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
def test_the_parent_imports_no_framework(tmp_path: Path) -> None:
    commands = _commands(tmp_path)
    project = tmp_path / "project"
    project.mkdir()
    runs = [(name, str(project if name == "init" else Path.cwd()), argv)
            for name, argv in commands.items()]  # fmt: skip
    out = tmp_path / "audit.json"
    done = subprocess.run(
        [sys.executable, "-c", AUDIT, str(out), json.dumps(runs)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert out.is_file(), f"parity died: {done.stderr[-3000:]}"
    audit = json.loads(out.read_text())
    assert list(audit["codes"]) == list(commands)  # every command ran
    failed = {name: code for name, code in audit["codes"].items() if code != 0}
    assert not failed, f"exit codes {failed}\n{done.stderr[-3000:]}"
    where = "\n".join(f"{name} imported by {stack}" for name, stack in audit["where"].items())
    assert audit["loaded"] == [], f"parity imported {audit['loaded']} here\n{where}"
