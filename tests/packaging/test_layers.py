"""The package's shape: layers import only downwards, no cycles, a small top level.

Every module of ``gpualign`` is parsed with ``ast`` and every import read, the
deferred ones inside functions included. A module may import its own layer and the
layers below it; the order is the one drawn in the README's design section.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "gpualign"

#: Rank of each top-level module or subpackage: a module may import ranks <= its own.
LAYERS = {
    "_errors": 0, "_version": 0, "_settings": 0, "_system": 0, "_progress": 0,
    "_simulate": 0, "simulate": 0,
    "backend": 1,
    "transform": 2,
    "detect": 3,
    "match": 4,
    "fit": 5,
    "warp": 6,
    "products": 7,
    "io": 8,
    "pipeline": 9,
    "batch": 10,
    "cli": 11,
    "__init__": 12, "__main__": 12,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, modules: set[str] | frozenset[str] = frozenset()) -> set[str]:
    """Absolute names of every module imported anywhere in ``path`` (deferred included).

    ``from package import name`` counts as importing ``package.name`` when that is one
    of ``modules``, else as importing ``package``.
    """
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            subs = {f"{mod}.{a.name}" for a in node.names} & set(modules)
            found.update(subs or {mod})
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    names = set(modules)
    return {m: {i for i in _imports(p, names) if i in modules and i != m}
            for m, p in modules.items()}


def _layer(module: str) -> int:
    parts = module.split(".")
    if module == "gpualign":
        return LAYERS["__init__"]
    return LAYERS[parts[1]]


def test_every_module_has_a_layer():
    for module in _graph():
        assert module == "gpualign" or module.split(".")[1] in LAYERS, module


def test_imports_only_go_down():
    upward = [f"{m} (layer {_layer(m)}) imports {i} (layer {_layer(i)})"
              for m, targets in _graph().items() for i in targets if _layer(i) > _layer(m)]
    assert not upward, "\n".join(upward)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_checks_catch_what_they_look_for():
    """The cycle finder finds a planted cycle; the layer rule flags a planted upward edge."""
    graph = _graph()
    graph["gpualign.transform._transform"] = graph["gpualign.transform._transform"] | {
        "gpualign.fit._robust"}
    assert any("gpualign.transform._transform" in c for c in _cycles(graph))
    assert _layer("gpualign.fit._robust") > _layer("gpualign.transform._transform")


def test_top_level_is_small():
    files = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(files) <= 10, files


@pytest.mark.parametrize(("names", "home"), [
    (("cupy", "cupyx"), "backend"),
    (("typer",), "cli"),
])
def test_some_imports_live_in_one_subpackage(names, home):
    """CuPy is imported only by the backend layer; typer (Exit, echo) only by the CLI."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        module = _module_name(path)
        if module != "gpualign" and module.split(".")[1] == home:
            continue
        if any(i.split(".")[0] in names for i in _imports(path)):
            offenders.append(module)
    assert offenders == []
