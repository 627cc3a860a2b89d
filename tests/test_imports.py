"""The package's import graph has no circles, and production code never imports the
development tools.

Neither ruff nor mypy reports an import circle: Python tolerates most of them until a
module is imported first from an unexpected side, and then a name is missing at import
time. So the graph is checked here, from the source with :mod:`ast`, without importing
anything.

What counts as an import of module A by module B:

* every ``import``/``from ... import`` statement of B that runs when B is imported: at
  module level, in module-level ``if``/``try``/``with`` blocks and in class bodies;
* including those under ``if TYPE_CHECKING:``. They do not run, but a type-only circle
  still ties two modules into one unit (neither can be understood, moved or type-checked
  without the other), and it turns into a real circle the day one annotation is needed at
  run time. A circle is broken by moving what both need into a third module, not by
  hiding one side behind ``TYPE_CHECKING``;
* not imports inside functions: they run on first call, after every module has loaded,
  which is how a command loads its dependencies lazily.

``from streamsync.x import y`` imports the module ``streamsync.x.y`` when there is one,
else (``y`` is a name defined in it) ``streamsync.x``; importing a package is importing
its ``__init__``. Relative imports are resolved the same way. The parents Python imports
on the way to a submodule are not edges: a package ``__init__`` that re-exports one of its
submodules would otherwise always form a circle with it.

There is no allow-list: a circle found here is fixed in the code. The one exception,
marked in :func:`test_no_import_circles`, is the type-only pair ``runtime/app.py`` and
``runtime/observer.py``, which the rewrite of those two modules removes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "streamsync"
DEV = "streamsync.dev"
#: Modules that exist to launch the development tools; they import them only inside
#: the command function, but are allowed to import them at all.
DEV_LAUNCHERS = frozenset({"streamsync.cli.demo", "streamsync.cli.dev"})


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def discover() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def eager_imports(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements that run (or, under ``TYPE_CHECKING``, are type-checked) when
    the module is imported: everything outside function bodies."""
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
            continue
        pending.extend(ast.iter_child_nodes(node))


def absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    # A module's own package is its name minus the last part; a package's is itself.
    drop = node.level - 1 if is_package else node.level
    anchor = base[: len(base) - drop] if drop else base
    return ".".join([*anchor, *([node.module] if node.module else [])])


def targets(
    node: ast.Import | ast.ImportFrom, module: str, modules: dict[str, Path]
) -> Iterator[str]:
    """The streamsync modules one import statement imports."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name in modules:
                yield alias.name
        return
    is_package = modules[module].name == "__init__.py"
    source = absolute(node, module, is_package)
    for alias in node.names:
        candidate = f"{source}.{alias.name}"
        if candidate in modules:
            yield candidate
        elif source in modules:
            yield source


def import_graph() -> dict[str, set[str]]:
    modules = discover()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        graph[module] = {
            target
            for node in eager_imports(tree)
            for target in targets(node, module, modules)
            if target != module
        }
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative (no recursion limit): every component of more than
    one module, and every module that imports itself, is a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
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
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in graph[node]:
                    found.append(sorted(component))
    return sorted(found)


def describe(component: list[str], graph: dict[str, set[str]]) -> str:
    members = set(component)
    edges = [
        f"{source} -> {target}"
        for source in component
        for target in sorted(graph[source] & members)
    ]
    return f"{', '.join(component)} ({'; '.join(edges)})"


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}, "f": set()}
    assert strongly_connected(graph) == [["a", "b", "c"], ["e"]]


def test_from_imports_resolve_to_submodules_or_the_module() -> None:
    graph = import_graph()
    # ``from streamsync.ingest import pipelines, webhooks``: two submodules.
    assert {"streamsync.ingest.pipelines", "streamsync.ingest.webhooks"} <= graph[
        "streamsync.ingest.decoder"
    ]
    # ``from streamsync import __version__``: a name in the package's ``__init__``.
    assert "streamsync" in graph["streamsync.cli"]


def test_no_import_circles() -> None:
    graph = import_graph()
    circles = [describe(component, graph) for component in strongly_connected(graph)]
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_production_modules_do_not_import_the_dev_tools() -> None:
    graph = import_graph()
    offenders = sorted(
        f"{module} -> {target}"
        for module, imported in graph.items()
        if not (module == DEV or module.startswith(f"{DEV}.")) and module not in DEV_LAUNCHERS
        for target in imported
        if target == DEV or target.startswith(f"{DEV}.")
    )
    assert not offenders, offenders


def test_dev_launchers_import_the_dev_tools_lazily() -> None:
    """The CLI loads every command module to build its parser; the ones that launch dev
    tools must not load those tools (and the broker's dependencies) for other commands."""
    graph = import_graph()
    eager = sorted(
        f"{module} -> {target}"
        for module in DEV_LAUNCHERS
        for target in graph[module]
        if target == DEV or target.startswith(f"{DEV}.")
    )
    assert not eager, eager
