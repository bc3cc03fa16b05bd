"""No module of lsun_crowd imports, directly or through others, a module that imports it back.

Imports at module level and imports deferred into a function body both count: a deferred import
only hides a cycle until the function runs. Imports under ``if TYPE_CHECKING:`` do not, since
they never run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lsun_crowd"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(body: Iterable[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement that can run, in any nested block, skipping ``if TYPE_CHECKING:``."""
    for statement in body:
        if isinstance(statement, ast.Import | ast.ImportFrom):
            yield statement
        elif isinstance(statement, ast.If) and _is_type_checking(statement.test):
            yield from runtime_imports(statement.orelse)
            continue
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            for child in getattr(statement, field, ()):
                if isinstance(child, ast.ExceptHandler | ast.match_case):
                    yield from runtime_imports(child.body)
                elif isinstance(child, ast.stmt):
                    yield from runtime_imports([child])


def imported_modules(statement: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> Iterator[str]:
    """Dotted names the statement may load: ``from a import b`` loads ``a`` and, if it is a module, ``a.b``."""
    if isinstance(statement, ast.Import):
        yield from (alias.name for alias in statement.names)
        return
    if statement.level:
        anchor = importer.split(".")
        anchor = anchor[: len(anchor) - statement.level + (1 if is_package else 0)]
        base = ".".join([*anchor, statement.module] if statement.module else anchor)
    else:
        base = statement.module or ""
    yield base
    yield from (f"{base}.{alias.name}" for alias in statement.names)


def import_graph() -> dict[str, set[str]]:
    """Each module of the package, with the package's modules it imports at run time."""
    paths = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        targets = set()
        for statement in runtime_imports(tree.body):
            for imported in imported_modules(statement, name, path.name == "__init__.py"):
                if imported in paths and imported != name:
                    targets.add(imported)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, …, a]``, or ``None`` when the graph has none."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph()
    assert "lsun_crowd.demo" in graph and "lsun_crowd.cli" in graph  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_demo_does_not_import_the_command_line() -> None:
    graph = import_graph()
    assert "lsun_crowd.cli" in graph["lsun_crowd.demo"] or "lsun_crowd.progress" in graph["lsun_crowd.demo"]
    reachable, todo = set(), ["lsun_crowd.demo"]
    while todo:
        for target in graph[todo.pop()] - reachable:
            reachable.add(target)
            todo.append(target)
    assert "lsun_crowd.cli" not in reachable


def test_the_cycle_finder_finds_cycles_and_deferred_imports() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    source = """
from typing import TYPE_CHECKING
import lsun_crowd.x
if TYPE_CHECKING:
    import lsun_crowd.typing_only
def f():
    from lsun_crowd import y
    try:
        from . import z
    except ImportError:
        import lsun_crowd.w
"""
    found = {
        name
        for statement in runtime_imports(ast.parse(source).body)
        for name in imported_modules(statement, "lsun_crowd.m", is_package=False)
    }
    assert {"lsun_crowd.x", "lsun_crowd.y", "lsun_crowd.z", "lsun_crowd.w"} <= found
    assert "lsun_crowd.typing_only" not in found


COMMANDS_WITHOUT_A_MODEL = """
import sys
from typer.testing import CliRunner
from lsun_crowd.cli import app
from lsun_crowd.plugins import Plugins

Plugins().add_commands(app)  # as main() does: the plugins' own commands, serve among them
project = sys.argv[1]
for arguments in (
    ["init", project],
    ["status", "--project", project],
    ["export", "--project", project, "--out", project + "/labels.jsonl"],
    ["plugins", "--all"],
    ["serve", "--help"],
):
    result = CliRunner().invoke(app, arguments)
    assert result.exit_code == 0, (arguments, result.output)
print(sorted(name for name in sys.modules if name.split(".")[0] in {"torch", "torchvision"}))
"""


def test_commands_that_need_no_model_never_import_torch(tmp_path: Path) -> None:
    """Importing torch costs every command seconds and most of a gigabyte: only embedding,
    training and aggregation that runs a model may pay it."""
    result = subprocess.run(
        [sys.executable, "-c", COMMANDS_WITHOUT_A_MODEL, str(tmp_path / "project")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"
