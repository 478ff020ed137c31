"""The house rules of the layout (DESIGN.md, section 3), checked on the source itself:

* the module import graph of ``src/vla_align`` has no cycle (imports inside functions count; those
  under ``if TYPE_CHECKING:`` do not, they never run);
* ``data/`` is a leaf: it imports only itself and the small shared modules, never the simulators,
  the model, training or the report;
* no code outside the simulator registry (``sim/``) compares a simulator's name.
"""

from __future__ import annotations

import ast
from pathlib import Path

from vla_align.sim import SIMULATORS

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "vla_align"
SHARED = {
    "vla_align.errors",
    "vla_align.atomic",
    "vla_align.progress",
    "vla_align.modalities",
    "vla_align.registry",
    "vla_align.safety",  # what may be replaced or written where (atomic uses it too)
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) and id(n) not in skip]


def import_graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps: set[str] = set()
        for node in _runtime_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name in mods)
                continue
            parts = package.split(".")
            base = ".".join(parts[: len(parts) - node.level + 1]) if node.level else ""
            target = ".".join(p for p in (base, node.module or "") if p)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                deps.add(sub if sub in mods else target)
        graph[name] = {d for d in deps if d in mods and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_data_is_a_leaf() -> None:
    graph = import_graph()
    bad = {
        m: sorted(d for d in deps if not d.startswith("vla_align.data") and d not in SHARED)
        for m, deps in graph.items()
        if m.startswith("vla_align.data")
    }
    assert {m: d for m, d in bad.items() if d} == {}


def _is_startswith(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "startswith"


def _name_comparisons(tree: ast.Module, names: set[str]) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            for op in operands:
                values = op.elts if isinstance(op, ast.Tuple | ast.List | ast.Set) else [op]
                if any(isinstance(v, ast.Constant) and v.value in names for v in values):
                    lines.append(node.lineno)
        elif _is_startswith(node) and any(
            isinstance(a, ast.Constant) and str(a.value).lower().startswith(tuple(names)) for a in node.args
        ):
            lines.append(node.lineno)
    return lines


def test_no_simulator_name_is_compared_outside_the_registry() -> None:
    names = set(SIMULATORS.names()) | {"BabyAI", "babyai", "metaworld", "MetaWorld"}
    found = {
        str(path.relative_to(SRC)): lines
        for path in PACKAGE.rglob("*.py")
        if "sim" not in path.relative_to(PACKAGE).parts[:1]
        and (lines := _name_comparisons(ast.parse(path.read_text()), names))
    }
    assert found == {}


def test_the_name_check_sees_a_comparison() -> None:
    tree = ast.parse('if source == "babyai" or t.startswith("BabyAI"): pass\nx = s in ("metaworld",)')
    assert sorted(_name_comparisons(tree, {"babyai", "metaworld", "BabyAI"})) == [1, 1, 2]
