"""The suite's own shape: no test module imports a framework at its top.

pytest-xdist collects every test module in every xdist worker, so one ``import keras`` at
the top of one module puts TensorFlow (0.6 GiB, ~5 s) in both workers before their first
test. Frameworks are imported inside the tests, or as ``deferred`` names
(tests/deferred.py).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

TESTS = Path(__file__).resolve().parent
FRAMEWORKS = frozenset(
    {"torch", "torchvision", "tensorflow", "keras", "onnxruntime", "openvino", "ai_edge_litert"}
)


def run_at_import(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of ``body`` and of its ``if``/``try``/``with`` blocks, not those of
    functions and classes."""
    for node in body:
        yield node
        if isinstance(node, ast.If | ast.Try | ast.With):
            blocks = [node.body, getattr(node, "orelse", []), getattr(node, "finalbody", [])]
            blocks += [handler.body for handler in getattr(node, "handlers", [])]
            for block in blocks:
                yield from run_at_import(block)


def top_level_framework_imports(source: str) -> list[str]:
    """``line: module`` for each framework a module imports as it is imported."""
    found = []
    for node in run_at_import(ast.parse(source).body):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [f"{node.lineno}: {n}" for n in names if n.split(".")[0] in FRAMEWORKS]
    return sorted(found)


def test_the_check_finds_a_framework_imported_at_the_top() -> None:
    source = (
        "import numpy as np\n"
        "try:\n    import keras\nexcept ImportError:\n    pass\n"
        "from torch import nn\n"
        "def test_x():\n    import tensorflow\n"
    )
    assert top_level_framework_imports(source) == ["3: keras", "6: torch"]


def test_no_test_module_imports_a_framework_at_its_top() -> None:
    found = {
        str(path.relative_to(TESTS)): hits
        for path in sorted(TESTS.rglob("*.py"))
        if "data" not in path.relative_to(TESTS).parts
        and (hits := top_level_framework_imports(path.read_text()))
    }
    assert found == {}, f"import these inside the tests, or as deferred names: {found}"
