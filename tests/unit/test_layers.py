"""The import graph of jobsys has no cycles, counting every import a module makes when it runs:
those at the top and those inside functions (``grimp`` reads them all from the source).
Imports under ``if TYPE_CHECKING:`` are left out: they name types for the checker and never
run. The layers themselves are contracts in pyproject.toml, checked by ``lint-imports``."""

from __future__ import annotations

import grimp


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """The groups of modules that import each other, directly or not (the strongly connected
    components of more than one module, by Tarjan's algorithm), and any module importing
    itself."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def edges(m: str) -> list[str]:
        return sorted(i for i in graph.find_modules_directly_imported_by(m) if i in modules)

    def visit(m: str) -> None:
        index[m] = low[m] = len(index)
        stack.append(m)
        for child in edges(m):
            if child not in index:
                visit(child)
                low[m] = min(low[m], low[child])
            elif child in stack:
                low[m] = min(low[m], index[child])
        if low[m] == index[m]:
            component = stack[stack.index(m) :]
            del stack[stack.index(m) :]
            if len(component) > 1 or m in edges(m):
                found.append(sorted(component))

    for m in sorted(modules):
        if m not in index:
            visit(m)
    return found


def import_cycles() -> list[list[str]]:
    graph = grimp.build_graph(
        "jobsys", "workers", "beat", exclude_type_checking_imports=True, cache_dir=None
    )
    modules = {m for m in graph.modules if m.split(".")[0] in {"jobsys", "workers", "beat"}}
    return _cycles(graph, modules)


def test_no_import_cycles() -> None:
    assert import_cycles() == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for m in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(m)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph, {"p.a", "p.b", "p.c"}) == [["p.a", "p.b"]]


if __name__ == "__main__":
    for cycle in import_cycles():
        print(" <-> ".join(cycle))
