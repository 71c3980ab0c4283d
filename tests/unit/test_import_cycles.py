"""The package's import graph has no cycles, and its layers import only downwards.

The graph is read from the source with ``ast``: every module-level import, including those
under ``if TYPE_CHECKING:`` (a cycle that only the type checker sees still ties the modules
together for a reader and for mypy). Imports inside functions are left out: they are the
deliberate way to defer one (and each should say why).
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterator
from pathlib import Path

import bridgehead

ROOT = Path(bridgehead.__file__).parent
PACKAGE = "bridgehead"

# Lower layers never import the ones listed against them.
FORBIDDEN = {
    "bridgehead.sdk": ("bridgehead.agent", "bridgehead.control", "bridgehead.plugins"),
    "bridgehead.protocol": ("bridgehead.agent", "bridgehead.control", "bridgehead.plugins"),
    "bridgehead.core": ("bridgehead.agent", "bridgehead.control", "bridgehead.plugins"),
    "bridgehead.control": ("bridgehead.agent", "bridgehead.plugins"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def top_level_imports(tree: ast.Module) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Imports run when the module loads, or seen by the type checker (``True`` beside
    them): at module level and in module-level ``if``/``try`` blocks, not in functions or
    classes."""
    stack: list[tuple[ast.stmt, bool]] = [(node, False) for node in tree.body]
    while stack:
        node, type_only = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, type_only
        elif isinstance(node, ast.If):
            stack.extend((child, type_only or _is_type_checking(node.test)) for child in node.body)
            stack.extend((child, type_only) for child in node.orelse)
        elif isinstance(node, ast.Try):
            blocks = [node.body, node.orelse, node.finalbody, *(handler.body for handler in node.handlers)]
            stack.extend((child, type_only) for block in blocks for child in block)


def import_graph(type_checking: bool = True) -> dict[str, set[str]]:
    """Module -> the ``bridgehead`` modules it imports (a ``from package import name`` counts
    as the submodule when ``name`` is one, else as the package); without ``type_checking``,
    leaving out the imports under ``if TYPE_CHECKING:``."""
    paths = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        is_package = path.name == "__init__.py"
        for node, type_only in top_level_imports(ast.parse(path.read_text(), str(path))):
            if type_only and not type_checking:
                continue
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = name.split(".")
                    base = base[: len(base) - node.level + (1 if is_package else 0)]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [
                    f"{module}.{alias.name}" if f"{module}.{alias.name}" in paths else module for alias in node.names
                ]
            for target in targets:
                # ``import a.b.c`` also runs a and a.b; the deepest module known stands for it.
                while target and target not in paths:
                    target = target.rpartition(".")[0]
                if target.startswith(PACKAGE) and target != name:
                    graph[name].add(target)
    return graph


def tangles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's, without
    recursion): each module of one reaches every other one and is reached back."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per tangle, as a path that comes back to its start."""
    return [_path_through(graph, set(c), c[0]) for c in tangles(graph)]


def _path_through(graph: dict[str, set[str]], members: set[str], start: str) -> list[str]:
    """A shortest cycle from ``start`` back to it, within one component."""
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following: list[str] = []
        for node in frontier:
            for child in sorted(graph[node] & members):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{start} is in no cycle")  # pragma: no cover - a component has one


def test_the_graph_sees_the_package() -> None:
    """The graph holds the package's modules and the imports between them (it can fail)."""
    graph = import_graph()
    assert "bridgehead.control.app" in graph
    assert "bridgehead.control.config" in graph["bridgehead.control.plane"]


def test_cycles_are_found() -> None:
    """A made-up graph with a cycle is reported, as a path back to its start."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [["a", "b", "c", "a"]] == cycles(graph)


def test_imports_under_type_checking_count() -> None:
    """An import only the type checker sees is an edge too, and can be told apart."""
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import a\nelse:\n    import b\n"
    found = {
        (node.module if isinstance(node, ast.ImportFrom) else node.names[0].name, type_only)
        for node, type_only in top_level_imports(ast.parse(source))
    }
    assert {("typing", False), ("a", True), ("b", False)} == found


def test_no_import_cycles() -> None:
    """No module of bridgehead imports itself back, directly or through others."""
    graph = import_graph()
    runtime = import_graph(type_checking=False)
    found = tangles(graph)
    report = []
    for tangle in found:
        path = _path_through(graph, set(tangle), tangle[0])
        steps = [path[0]] + [
            f"{b}{'' if b in runtime[a] else ' (under TYPE_CHECKING)'}" for a, b in itertools.pairwise(path)
        ]
        report.append(" -> ".join(steps) + f"\n  (all tied: {', '.join(tangle)})")
    assert [] == found, "import cycles:\n" + "\n".join(report)


def test_no_import_cycles_at_run_time() -> None:
    """Leaving out what only the type checker sees, no module imports itself back either:
    the order modules load in never decides whether a name is there yet."""
    found = cycles(import_graph(type_checking=False))
    assert [] == found, "import cycles at run time:\n" + "\n".join(" -> ".join(c) for c in found)


def test_layers_import_only_downwards() -> None:
    """sdk, protocol and core know nothing of agent, control or plugins; control knows
    nothing of agent or plugins."""
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        for layer, banned in FORBIDDEN.items()
        if module == layer or module.startswith(layer + ".")
        for target in targets
        if any(target == b or target.startswith(b + ".") for b in banned)
    )
    assert [] == wrong, "imports against the layering:\n" + "\n".join(wrong)


HTTP_SIDE = ("starlette", "uvicorn", "bridgehead.control.http", "bridgehead.control.errors", "bridgehead.control.app")
NO_HTTP = ("bridgehead.control.services", "bridgehead.control.schedules")


def test_the_services_know_nothing_of_http() -> None:
    """The services and the scheduler import no web framework and nothing of the HTTP
    layer (anywhere in the module, functions too): HTTP maps their errors, not they."""
    wrong = []
    for path in ROOT.rglob("*.py"):
        module = module_name(path)
        if not module.startswith(NO_HTTP):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            wrong += [f"{module} -> {n}" for n in names if any(n == h or n.startswith(h + ".") for h in HTTP_SIDE)]
    assert [] == sorted(wrong)
