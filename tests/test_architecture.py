"""The package's structure: one direction of imports in gui/, no reaching into others'
private parts."""

from __future__ import annotations

import ast
from pathlib import Path

import histoviewer

PACKAGE = Path(histoviewer.__file__).parent

#: Private names of the standard library that have no public spelling.
STDLIB_PRIVATE = {"os._exit", "sys._getframe", "argparse._SubParsersAction"}


def modules(folder: Path) -> dict[str, ast.Module]:
    return {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts): ast.parse(
            path.read_text(encoding="utf-8")
        )
        for path in sorted(folder.rglob("*.py"))
    }


def imported(tree: ast.Module) -> set[str]:
    """Every histoviewer module a module imports, TYPE_CHECKING blocks included."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return {n for n in names if n.startswith("histoviewer.")}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_import_cycles_in_the_gui():
    gui = modules(PACKAGE / "gui")
    graph = {name: {m for m in imported(tree) if m in gui} for name, tree in gui.items()}
    assert cycles(graph) == []


def test_only_the_app_knows_the_main_window():
    gui = modules(PACKAGE / "gui")
    users = sorted(n for n, tree in gui.items() if "histoviewer.gui.mainwindow" in imported(tree))
    assert users == ["histoviewer.gui.app", "histoviewer.gui.demo"]


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def private_uses(tree: ast.Module) -> list[str]:
    """``x._name`` where x is not self, cls, or the class the code is in."""
    found = []

    def walk(node: ast.AST, classes: tuple[str, ...]) -> None:
        if isinstance(node, ast.ClassDef):
            classes = (*classes, node.name)
        if (
            isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            owner = node.value
            own = isinstance(owner, ast.Name) and owner.id in ("self", "cls", *classes)
            text = ast.unparse(node)
            if not own and text not in STDLIB_PRIVATE:
                found.append(f"line {node.lineno}: {text}")
        for child in ast.iter_child_nodes(node):
            walk(child, classes)

    walk(tree, ())
    return found


def test_no_code_reaches_into_another_objects_private_parts():
    uses = {name: private_uses(tree) for name, tree in modules(PACKAGE).items()}
    assert {name: found for name, found in uses.items() if found} == {}


def test_the_private_use_finder_finds_them():
    tree = ast.parse(
        "class A:\n"
        "    def f(self, other):\n"
        "        self._mine(); A._counter; other._theirs()\n"
        "os._exit(0)\n"
    )
    assert private_uses(tree) == ["line 3: other._theirs"]
