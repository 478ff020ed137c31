"""Code shape: no function or method in ``src/vla_align`` is longer than :data:`MAX_LINES` lines.

A function's length runs from its ``def`` line to its last line, signature and docstring included
(decorators not); nested functions count on their own and inside the function around them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import vla_align

MAX_LINES = 60
PACKAGE = Path(vla_align.__file__).resolve().parent


def _long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            end = node.end_lineno if node.end_lineno is not None else node.lineno
            length = end - node.lineno + 1
            if length > MAX_LINES:
                out.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: {length} lines")
    return out


def test_every_module_is_found() -> None:
    modules = sorted(PACKAGE.rglob("*.py"))
    assert PACKAGE / "__init__.py" in modules
    assert len(modules) > 10


def test_no_function_is_longer_than_the_limit() -> None:
    too_long = [line for path in sorted(PACKAGE.rglob("*.py")) for line in _long_functions(path)]
    assert not too_long, f"{len(too_long)} functions over {MAX_LINES} lines:\n" + "\n".join(too_long)
