"""The package's layout (tokencompose/README.md): the method never imports the toy world, nothing imports in a
circle, and the page of the architecture names every module there is.

Imports are read from the source (``ast``), lazy ones inside functions included, so a rule cannot be kept by
importing late."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tokencompose"
#: the layers that may name the world: the command line and the presets (DESIGN.md)
MAY_NAME_THE_WORLD = {"tokencompose.__main__", "tokencompose.config", "tokencompose.evaluate.cli"}
WORLD = "tokencompose.toy"


def module_name(path: Path, root: Path = PACKAGE.parent) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str], root: Path = PACKAGE.parent) -> set[str]:
    """The package modules ``path`` imports, relative imports resolved; ``from X import name`` counts as the
    module ``X.name`` where that is a module (``from tokencompose.toy import world``), else as ``X``."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("tokencompose")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("tokencompose"):
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.add(full if full in known else target)
    return found - {name}


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): {m for m in imported_modules(p, known) if m in known} for p in paths}


def is_world(name: str) -> bool:
    return name == WORLD or name.startswith(WORLD + ".")


def test_the_method_never_imports_the_world():
    graph = import_graph()
    offenders = {name: sorted(m for m in deps if is_world(m)) for name, deps in graph.items()
                 if not is_world(name) and name not in MAY_NAME_THE_WORLD}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"modules of the method import the toy world: {offenders}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path [a, b, ..., a], or ``None``."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_nothing_imports_in_a_circle():
    # package __init__ files import their own submodules (evaluate -> evaluate.detectors) by design; a cycle
    # through an __init__ is still reported, since only real edges are in the graph
    cycle = find_cycle(import_graph())
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


def test_the_checks_can_fail(tmp_path):
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    # a lazy import of the world inside a function of a method module is seen, relative or absolute
    probe = tmp_path / "tokencompose" / "probe.py"
    probe.parent.mkdir()
    probe.write_text("def f():\n    from .toy import world\n    from tokencompose.toy.detector import ToyDetector\n")
    found = imported_modules(probe, {"tokencompose.toy.world", "tokencompose.toy.detector"}, root=tmp_path)
    assert found == {"tokencompose.toy.world", "tokencompose.toy.detector"}


def test_the_architecture_page_names_every_module():
    page = (PACKAGE / "README.md").read_text(encoding="utf-8")
    missing = [name for name in import_graph() if name != "tokencompose"
               and f"{name.rpartition('.')[2]}" not in page]
    assert not missing, f"tokencompose/README.md does not name {missing}"


@pytest.mark.parametrize("name", sorted(MAY_NAME_THE_WORLD))
def test_the_exempt_layers_exist(name):
    assert name in import_graph(), f"{name} is exempt from the layout rule but no longer exists"


def test_the_world_does_not_import_the_command_line():
    graph = import_graph()
    command_line = {"tokencompose.__main__", "tokencompose.evaluate.cli"}
    offenders = {name: sorted(deps & command_line) for name, deps in graph.items() if is_world(name)}
    assert not any(offenders.values()), f"the toy world imports the command line: {offenders}"
