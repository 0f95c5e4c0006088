"""No function or method in src/crossrec is over 60 lines (issue 34): a long function is split along
its phases into named helpers. The compiled kernels (src/crossrec/kernels/) are exempt.

An AST walk: a function's length is `end_lineno - lineno + 1` (decorators not counted; its
docstring, comments and blank lines are), and nested functions count on their own as well as
inside the function that holds them.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "crossrec"
EXEMPT = ("kernels",)  # directories under src/crossrec: compiled kernels
MAX_LINES = 60


def long_functions(root: Path = SRC, limit: int = MAX_LINES) -> list[tuple[str, int, str, int]]:
    """(path under root, line, name, length) of every function or method over `limit` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in EXEMPT:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > limit:
                    found.append((rel.as_posix(), node.lineno, node.name, length))
    return sorted(found)


def test_no_function_over_60_lines():
    over = long_functions()
    assert not over, f"functions over {MAX_LINES} lines (split them into named helpers):\n" + "\n".join(
        f"  src/crossrec/{path}:{line} {name}: {length} lines" for path, line, name, length in over
    )


def test_the_walk_finds_a_long_function(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))  # def line + 60 = 61 lines
    (tmp_path / "long.py").write_text(f"def f():\n{body}\n\n\nclass C:\n    async def g(self):\n        pass\n")
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "k.py").write_text(f"def k():\n{body}\n")
    assert long_functions(tmp_path) == [("long.py", 1, "f", MAX_LINES + 1)]
    assert long_functions(tmp_path, limit=MAX_LINES + 1) == []
