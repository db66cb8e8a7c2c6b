"""The package's import graph has no circle (module-level and function-level imports alike).

Every minigpt/**/*.py is parsed with ast; an edge A -> B is any `import B` / `from B import x` inside A,
at module level or inside a function (a deferred import still ties the two modules together), plus
B's parent packages, whose __init__ runs first. Imports under `if TYPE_CHECKING:` are left out: they
never run. A circle fails the test with the modules on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "minigpt"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The minigpt modules `path` imports (a `from pkg import name` that names a submodule counts as it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if _type_checking_only(node, parents):
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a name inside module a.b
                target = target.rpartition(".")[0]
            while target:  # the module and its parent packages (their __init__ runs first)
                if target != me and not me.startswith(target + "."):  # a package's own parents are not a circle
                    found.add(target)
                target = target.rpartition(".")[0]
    return found


def import_graph() -> nx.DiGraph:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = nx.DiGraph()
    for path in paths:
        graph.add_node(module_name(path))
        graph.add_edges_from((module_name(path), target) for target in imports_of(path, modules))
    return graph


def test_the_graph_sees_known_edges():
    graph = import_graph()
    assert graph.has_edge("minigpt.trainer", "minigpt.resume")  # module level
    assert graph.has_edge("minigpt.train", "minigpt.trainer")  # function level
    assert graph.has_edge("minigpt.trainer", "minigpt.data")  # a parent package's __init__ (of minigpt.data.corpus)
    assert not graph.has_edge("minigpt.hooks", "minigpt.trainer")  # only under TYPE_CHECKING


def test_no_import_circles():
    graph = import_graph()
    tangles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    if tangles:  # name one circle through each tangle of mutually importing modules
        circles = [nx.find_cycle(graph.subgraph(t)) for t in tangles]
        pytest.fail("import circles: " + "; ".join(" -> ".join([*(a for a, _ in c), c[0][0]]) for c in circles))


def test_the_model_layer_does_not_import_the_run_checks():
    """minigpt/model/ is below validate.py (which imports the logger and eval tables): `check_model` lives in
    minigpt/model/checks.py and validate re-exports it, never the other way round."""
    graph = import_graph()
    assert graph.has_edge("minigpt.validate", "minigpt.model.checks")
    model_modules = [m for m in graph if m == "minigpt.model" or m.startswith("minigpt.model.")]
    assert len(model_modules) >= 4
    assert [m for m in model_modules if graph.has_edge(m, "minigpt.validate")] == []
