"""The core's modules import each other in one direction only, and the core never imports a plugin.

Every import counts, including those inside functions: a lazy import hides a cycle, it does not
remove it.
"""

import ast
from pathlib import Path

import lpb_core

CORE = Path(lpb_core.__file__).parent


def module_name(path: Path) -> str:
    return "lpb_core" if path.name == "__init__.py" else f"lpb_core.{path.stem}"


def imported_names(source: str) -> set[str]:
    """Every module name an `import` or `from ... import` anywhere in ``source`` may load."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if not node.level else f"lpb_core.{node.module}"
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in CORE.glob("*.py")}
    return {name: {m for m in imported_names(path.read_text()) if m in modules and m != name}
            for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of modules (first repeated at the end), or None."""
    state: dict[str, str] = {}  # "visiting" or "done"
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "visiting"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "visiting":
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_core_has_no_import_cycle():
    graph = import_graph()
    assert len(graph) >= 20 and "lpb_core.daycare" in graph["lpb_core.run"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles_and_lazy_imports():
    lazy = "import os\n\ndef later():\n    from lpb_core.operators import BASE_ARGS\n"
    assert "lpb_core.operators" in imported_names(lazy)
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_core_never_imports_a_plugin():
    for path in CORE.glob("*.py"):
        plugins = sorted(n for n in imported_names(path.read_text()) if n.split(".")[0] == "lpb_plugins")
        assert not plugins, f"{path.name} imports {plugins}"
