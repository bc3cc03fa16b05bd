"""Plugins import only the core's declared public API, never the command line, the schema or the
round steps; and the public modules stay importable without the steps behind them changing."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = {
    "lsun_crowd",
    "lsun_crowd.api",
    "lsun_crowd.crowd",
    "lsun_crowd.fees",
    "lsun_crowd.hookspecs",
    "lsun_crowd.plugins",
    "lsun_crowd.redact",
    "lsun_crowd.render",
    "lsun_crowd.testing",
}
PLUGIN_SOURCES = sorted(
    path
    for pattern in ("plugins/*/lsun_crowd_*/**/*.py", "tests/vendor/lsun_crowd_*/**/*.py")
    for path in ROOT.glob(pattern)
    if ".egg-info" not in str(path)
)


def core_imports(path: Path) -> list[tuple[int, str]]:
    """Every ``lsun_crowd`` module the file imports, at any depth (deferred imports included)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
            if node.module == "lsun_crowd":
                names = [f"lsun_crowd.{alias.name}" for alias in node.names]
            found += [(node.lineno, name) for name in names if name.split(".")[0] == "lsun_crowd"]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "lsun_crowd"]
    return found


def test_there_are_plugins_to_check() -> None:
    packages = {
        path.relative_to(ROOT).parts[1] for path in PLUGIN_SOURCES if path.relative_to(ROOT).parts[0] == "plugins"
    }
    assert {"lsun-crowd-mock", "lsun-crowd-mturk", "lsun-crowd-web"} <= packages
    assert any("lsun_crowd_acme" in str(path) for path in PLUGIN_SOURCES)


@pytest.mark.parametrize("path", PLUGIN_SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_plugins_import_only_the_public_api(path: Path) -> None:
    private = [f"line {line}: {name}" for line, name in core_imports(path) if name not in PUBLIC]
    assert not private, f"{path.relative_to(ROOT)} imports outside the public API: {private}"


def test_the_check_catches_a_private_import(tmp_path: Path) -> None:
    sneaky = tmp_path / "sneaky.py"
    sneaky.write_text("def f():\n    from lsun_crowd.schema import Hit\n    from lsun_crowd import ledger, api\n")
    assert [name for _, name in core_imports(sneaky) if name not in PUBLIC] == [
        "lsun_crowd.schema",
        "lsun_crowd.ledger",
    ]


def test_the_public_api_is_importable_and_complete() -> None:
    import lsun_crowd.api as api

    missing = [name for name in api.__all__ if not hasattr(api, name)]
    assert not missing
    assert {"run_project", "reported_errors", "Project", "sample_hit", "worker_records"} <= set(api.__all__)


def test_what_an_adapter_needs_loads_without_the_model_stack() -> None:
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from lsun_crowd.api import ConfigError, IngestError, load_config, read_answers\n"
        "import lsun_crowd_mock, lsun_crowd_mturk, lsun_crowd_web\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
