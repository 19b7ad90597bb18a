"""The package's layering, read from every import statement (also those inside functions).

- no import circle anywhere in the package;
- ``execute/`` never imports ``api`` or ``cli`` (the api owns the client, execution takes a plan);
- ``graph/`` builds graphs and never computes them;
- ``units/`` import neither dask nor distributed (they are plain functions on arrays and stores);
- only ``clusters.py`` creates a ``distributed.Client``.
"""

import ast

from import_graph import Import, cycles, import_graph, modules

PACKAGE = "zemosaic_dask"
#: Calls that compute or wait for a graph; a graph builder makes none of them.
COMPUTING = {"compute", "persist", "gather", "submit", "result", "map"}


def _sources(folder: str) -> dict[str, ast.AST]:
    return {
        name: ast.parse(path.read_text(encoding="utf-8"))
        for name, path in modules().items()
        if name.startswith(f"{PACKAGE}.{folder}")
    }


def _reachable(graph: dict[str, list[Import]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        for edge in graph.get(node, []):
            if edge.target not in seen:
                seen.add(edge.target)
                todo.append(edge.target)
    return seen


def _computing_calls(tree: ast.AST) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in COMPUTING:
            owner = node.func.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            if name in ("dask", "client", "Client", "handle") or node.func.attr in ("compute", "persist", "gather"):
                found.append(f"line {node.lineno}: {name}.{node.func.attr}()")
    return found


def _heavy_imports(tree: ast.AST, heavy: tuple[str, ...]) -> list[str]:
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found += [f"line {node.lineno}: {n}" for n in names if n.split(".")[0] in heavy]
    return found


def test_the_package_has_no_import_circle():
    assert cycles(import_graph()) == []


def test_the_circle_finder_finds_a_circle():
    def edge(a, b):
        return Import(a, b, 1, False)

    graph = {"a": [edge("a", "b")], "b": [edge("b", "c")], "c": [edge("c", "a")], "d": [edge("d", "a")]}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": [edge("a", "b")], "b": []}) == []


def test_the_import_graph_sees_imports_inside_functions():
    graph = import_graph()
    local = [e for edges in graph.values() for e in edges if not e.top_level]
    assert local, "function-local imports exist in the package and must be part of the graph"
    assert all(e.target.startswith(PACKAGE) for edges in graph.values() for e in edges)


def test_execution_never_imports_the_api():
    graph = import_graph()
    for name in graph:
        if name.startswith(f"{PACKAGE}.execute"):
            reached = _reachable(graph, name)
            assert not {f"{PACKAGE}.api", f"{PACKAGE}.cli"} & reached, name


def test_graph_builders_never_compute():
    offending = {name: calls for name, tree in _sources("graph").items() if (calls := _computing_calls(tree))}
    assert offending == {}
    probe = ast.parse("def f(tasks, client):\n    return client.compute(tasks)\n")
    assert _computing_calls(probe), "the checker must flag a computing call"


def test_units_import_no_dask():
    heavy = ("dask", "distributed")
    offending = {name: found for name, tree in _sources("units").items() if (found := _heavy_imports(tree, heavy))}
    assert offending == {}
    assert _heavy_imports(ast.parse("def f():\n    from distributed import get_worker\n"), heavy)


def test_only_clusters_creates_a_client():
    creators = []
    for name, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                func = node.func
                called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                if called == "Client":
                    creators.append(name)
    assert set(creators) == {f"{PACKAGE}.clusters"}, creators
