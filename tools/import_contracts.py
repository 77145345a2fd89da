"""A custom import-linter contract: no import cycle between modules (``lint-imports``).

import-linter's ``acyclic_siblings`` squashes each package into one node, so a package
whose runners import a helper that imports the registry counts as a cycle; this contract
looks at modules, the unit a reader follows: module A importing B importing A (directly
or through others, function-local imports included) is a cycle, however it is hidden.
"""

from __future__ import annotations

from typing import Any

from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def cycles(graph: Any, package: str) -> list[list[str]]:
    """The strongly connected components (more than one module) of ``package``'s imports."""
    modules = sorted(m for m in graph.modules if m == package or m.startswith(package + "."))
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(graph.find_modules_directly_imported_by(module)):
            if not imported.startswith(package):
                continue
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in modules:
        if module not in index:
            visit(module)
    return sorted(found)


class AcyclicModulesContract(Contract):
    """``type = "acyclic_modules"``; ``package``: the package whose modules are checked."""

    type_name = "acyclic_modules"
    package = fields.StringField()

    def check(self, graph: Any, verbose: bool) -> ContractCheck:
        found = cycles(graph, str(self.package))
        edges = {
            tuple(component): [
                (a, b, [d["line_number"] for d in graph.get_import_details(importer=a, imported=b)])
                for a in component
                for b in component
                if b in graph.find_modules_directly_imported_by(a)
            ]
            for component in found
        }
        return ContractCheck(kept=not found, metadata={"edges": edges})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for component, edges in check.metadata["edges"].items():
            output.print_error(f"import cycle among {', '.join(component)}:")
            for importer, imported, lines in edges:
                output.print(f"    {importer} -> {imported} (l.{', '.join(map(str, lines))})")
            output.new_line()
