"""The modules of the core and of the built-in plugins import each other in one direction only, and the core
never imports a plugin.

Every import counts, including those inside functions: a lazy import hides a cycle, it does not
remove it.
"""

import ast
from pathlib import Path

import lpb_core
import lpb_plugins

CORE = Path(lpb_core.__file__).parent
PACKAGES = {"lpb_core": CORE, "lpb_plugins": Path(lpb_plugins.__file__).parent}


def module_name(package: str, root: Path, path: Path) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, package: str = "lpb_core") -> set[str]:
    """Every module name an `import` or `from ... import` anywhere in ``source`` (a module of ``package``) may
    load."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or node.level):
            parent = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            base = ".".join([*parent, *([node.module] if node.module else [])])
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # `from pkg import module`
    return names


def import_graph() -> dict[str, set[str]]:
    modules = {}  # module name -> (its package, its file)
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            name = module_name(package, root, path)
            modules[name] = (name if path.name == "__init__.py" else name.rpartition(".")[0], path)
    return {name: {m for m in imported_names(path.read_text(), package) if m in modules and m != name}
            for name, (package, path) in modules.items()}


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


def test_the_core_and_the_plugins_have_no_import_cycle():
    graph = import_graph()
    assert len(graph) >= 50 and "lpb_core.daycare" in graph["lpb_core.run"]
    assert "lpb_plugins.llama_cpp.chat" in graph["lpb_plugins.llama_cpp.lmtp_client"]
    cycle = find_cycle(graph)
    assert cycle is None, " -> ".join(cycle)


def test_the_cycle_finder_finds_cycles_and_lazy_imports():
    lazy = "import os\n\ndef later():\n    from lpb_core.operators import BASE_ARGS\n"
    assert "lpb_core.operators" in imported_names(lazy)
    assert "lpb_plugins.llama_cpp.chat" in imported_names("from .chat import x", "lpb_plugins.llama_cpp")
    assert "lpb_plugins.loggers" in imported_names("from .. import loggers", "lpb_plugins.llama_cpp")
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_core_never_imports_a_plugin():
    for path in CORE.glob("*.py"):
        plugins = sorted(n for n in imported_names(path.read_text()) if n.split(".")[0] == "lpb_plugins")
        assert not plugins, f"{path.name} imports {plugins}"
