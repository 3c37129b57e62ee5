"""The package's structure, read from its source with ``ast``: data flows one way, notebook -> training ->
model -> engine, so no module imports one that (directly or not) imports it back, and the engine
(``workshop_utils/engine``) imports nothing of the package outside itself, the teaching modules least
of all. Imports inside functions count too: they are dependencies all the same."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workshop_utils"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def resolve(importer: str, node: ast.ImportFrom) -> list:
    """The package's modules that ``from ... import ...`` in module ``importer`` imports."""
    package = importer if MODULES[importer].name == "__init__.py" else importer.rpartition(".")[0]
    if node.level:
        base = package.split(".")
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    found = [f"{target}.{alias.name}" for alias in node.names if f"{target}.{alias.name}" in MODULES]
    return found or ([target] if target in MODULES else [])


def imports(module: str) -> set:
    """The modules of the package that ``module`` imports, anywhere in its source."""
    tree = ast.parse(MODULES[module].read_text(), filename=str(MODULES[module]))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in MODULES)
        elif isinstance(node, ast.ImportFrom):
            found.update(resolve(module, node))
    found.discard(module)
    return found


GRAPH = {module: imports(module) for module in MODULES}


def test_the_graph_is_read():
    """The parser sees the imports we know of (so that the tests below can fail)."""
    assert "workshop_utils.engine" in GRAPH["workshop_utils.neurons"]
    assert "workshop_utils.engine.cpu" in GRAPH["workshop_utils.engine"]
    assert "workshop_utils.neurons" in GRAPH["workshop_utils.training"]


def test_no_import_cycle():
    """Depth-first search for a module that reaches itself; the cycle is named if there is one."""
    state = {}

    def visit(module, path):
        state[module] = "open"
        for imported in sorted(GRAPH[module]):
            if state.get(imported) == "open":
                cycle = path[path.index(imported):] + [imported]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if imported not in state:
                visit(imported, path + [imported])
        state[module] = "done"

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", sorted(module for module in MODULES if module.startswith("workshop_utils.engine")))
def test_the_engine_imports_nothing_of_the_package_outside_itself(module):
    outside = sorted(imported for imported in GRAPH[module] if not imported.startswith("workshop_utils.engine"))
    assert not outside, f"{module} imports {outside}: the engine must not depend on the teaching modules"
