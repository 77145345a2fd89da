"""The import contracts of pyproject.toml hold (``lint-imports``), and the cycle contract
can fail: a cycle hidden in a function-local import is found."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import grimp

from tools.import_contracts import cycles

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_are_kept() -> None:
    lint = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert lint is not None, "lint-imports is missing: pip install -e '.[dev]'"
    done = subprocess.run([lint], cwd=ROOT, capture_output=True, text=True)
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
