"""No module writes another object's private state (tests/test_architecture.py).

A write is an assignment or deletion through ``obj._name`` (``obj._name = v``,
``obj._name[k] = v``), a mutating call on it (``obj._name.update(...)``), or any use of
``obj.__dict__``, where ``obj`` is not ``self`` or ``cls``: the object's own methods keep
its state, and other code hands it values (``Session.take``).
"""

from __future__ import annotations

import ast
from pathlib import Path

MUTATORS = frozenset(
    ("append", "extend", "insert", "pop", "popitem", "remove", "clear", "update")
    + ("setdefault", "add", "discard")
)


def _foreign_private(node: ast.AST) -> bool:
    """``obj._name`` (not dunder) on an object other than ``self``/``cls``."""
    return (
        isinstance(node, ast.Attribute)
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
        and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
    )


def _base(node: ast.AST) -> ast.AST:
    """The attribute a subscript chain stores into (``obj._a[k][j]`` -> ``obj._a``)."""
    while isinstance(node, ast.Subscript):
        node = node.value
    return node


def private_writes(root: Path) -> list[str]:
    """``path:line: code`` of each write to another object's private state under ``root``."""
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            written: ast.AST | None = None
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
                targets = (
                    node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
                )
                written = next((t for t in targets if _foreign_private(_base(t))), None)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                if node.func.attr in MUTATORS and _foreign_private(_base(node.func.value)):
                    written = node
            elif isinstance(node, ast.Attribute) and node.attr == "__dict__":
                own = isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")
                written = None if own else node
            if written is not None:
                found.append(f"{path}:{node.lineno}: {ast.unparse(node).splitlines()[0]}")
    return found
