"""The worker's functions stay short: no function in ``worker_image/`` is longer than 60 lines.

Length is ``end_lineno - lineno + 1`` of the ``def`` (decorators excluded, docstring included). A
longer function is split along its stages; one that really must stay long says why in its docstring
with the words "is long because" (the marker this test looks for), e.g. "This function is long
because it is one numba kernel".
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "worker_image"
MAX_LINES = 60
MARKER = "is long because"


def _long_functions() -> list[str]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_LINES and MARKER not in (ast.get_docstring(node) or ""):
                found.append(f"{path.relative_to(ROOT.parent)}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_worker_function_is_longer_than_60_lines_without_a_reason() -> None:
    assert ROOT.is_dir()
    assert _long_functions() == []
