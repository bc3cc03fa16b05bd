"""Code a reader holds in their head: no function of lsun_crowd over 60 lines (its docstring
included), and no module over 400 lines but for those named below, which are still to be split
(issue 26); none of them may grow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lsun_crowd"
LONGEST_FUNCTION = 60
LONGEST_MODULE = 400
# Modules over LONGEST_MODULE lines today, each with the most lines it may have until it is split.
TO_SPLIT = {
    "certify.py": 1040,
    "autolabel.py": 872,
    "schema.py": 614,
    "repair.py": 607,
    "ledger.py": 520,
    "embedding_cache.py": 504,
    "testing.py": 479,
    "cli.py": 479,
    "votes_io.py": 443,
    "report/gather.py": 433,
    "review.py": 416,
    "store.py": 402,
}


def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]


def long_functions(source: str, longest: int = LONGEST_FUNCTION) -> list[tuple[str, int]]:
    """Each function of ``source`` over ``longest`` lines, with its length."""
    found = []
    for node in _functions(ast.parse(source)):
        length = (node.end_lineno or node.lineno) - node.lineno + 1
        if length > longest:
            found.append((node.name, length))
    return found


def test_no_function_is_over_sixty_lines() -> None:
    found = [
        f"{path.relative_to(PACKAGE)}:{name} ({length} lines)"
        for path in sorted(PACKAGE.rglob("*.py"))
        for name, length in long_functions(path.read_text())
    ]
    assert not found, f"functions over {LONGEST_FUNCTION} lines: {', '.join(found)}"


def test_no_module_is_over_four_hundred_lines_but_those_still_to_split() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        lines = len(path.read_text().splitlines())
        if lines > TO_SPLIT.get(name, LONGEST_MODULE):
            found.append(f"{name} ({lines} lines, at most {TO_SPLIT.get(name, LONGEST_MODULE)})")
    assert not found, f"modules too long: {', '.join(found)}"


@pytest.mark.parametrize("length, flagged", [(60, False), (61, True)])
def test_the_function_check_counts_every_line_of_a_function(length: int, flagged: bool) -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(length - 2))
    source = f'def f():\n    """Doc."""\n{body}'
    assert (long_functions(source) == [("f", length)]) is flagged
