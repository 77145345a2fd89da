"""The import contracts of pyproject.toml hold (``lint-imports``), and the cycle contracts
can fail: a cycle hidden in a function-local import is found, between modules and between
packages (a late import added to a copy of parity)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

from tools.import_contracts import cycles
from tools.private_state import private_writes

ROOT = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports", path=str(Path(sys.executable).parent))


def lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    assert LINT is not None, "lint-imports is missing: pip install -e '.[dev]'"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), str(ROOT)])}
    return subprocess.run([LINT], cwd=cwd, capture_output=True, text=True, env=env)


def test_the_import_contracts_are_kept() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_a_cycle_hidden_in_a_function_is_found(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "cyclic"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from cyclic import b\n")
    (package / "b.py").write_text("def late():\n    from cyclic import c\n")
    (package / "c.py").write_text("def later():\n    import cyclic.a\n")
    (package / "d.py").write_text("from cyclic import a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    graph = grimp.build_graph("cyclic", cache_dir=None)
    assert cycles(graph, "cyclic") == [["cyclic.a", "cyclic.b", "cyclic.c"]]


def test_a_package_cycle_in_a_late_import_breaks_the_contract(tmp_path: Path) -> None:
    """parity.runner asking the backend registry: no two modules import each other (the
    registry imports no runner), but parity.runner and parity.backends do (the backends'
    runners subclass parity.runner's), so the package contract breaks and the module
    contract holds. (parity.lazy asking it, as it once did for an extra's name, now closes a
    module cycle too: the registry's ExportContext names parity.weights, which imports lazy.)"""
    shutil.copytree(ROOT / "parity", tmp_path / "parity", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    runner = tmp_path / "parity" / "runner.py"
    runner.write_text(
        runner.read_text() + "\n\ndef registry() -> None:\n    from parity import backends\n"
    )
    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-2000:]
    assert "no import cycle between parity's modules KEPT" in done.stdout
    assert "no import cycle between parity's packages BROKEN" in done.stdout
    assert "- .runner -> .backends (1 import)" in done.stdout


def test_no_module_writes_another_objects_private_state(tmp_path: Path) -> None:
    assert private_writes(ROOT / "parity") == []
    (tmp_path / "hub.py").write_text(
        "def fill(session, run, value):\n"
        "    session._outputs['a'] = value\n"
        "    session._release = run\n"
        "    session._failures.update({})\n"
        "    session.__dict__['reference'] = value\n"
        "    self_like = session.reference  # a public read: fine\n"
        "    session.handed = value  # a public attribute: fine\n"
    )
    found = private_writes(tmp_path)
    assert [line.split(": ", 1)[0].rsplit(":", 1)[1] for line in found] == ["2", "3", "4", "5"]
