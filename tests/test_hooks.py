"""The plugin surface: every hook documented with its exact signature and tested by name."""

from __future__ import annotations

import inspect
import re
import types
from collections.abc import Callable
from pathlib import Path

import pluggy
import pytest
import typer
from typer.testing import CliRunner

from lsun_crowd import hookspecs
from lsun_crowd.hookspecs import hookimpl, hookspec
from lsun_crowd.plugins import Backbone, CrowdAdapter, PluginError, Plugins, get_plugin_manager

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
TESTS = Path(__file__).parent


def hook_specs(manager: pluggy.PluginManager) -> dict[str, Callable[..., object]]:
    """Every hook the manager has a specification for, whatever its name, with the spec's function."""
    return {
        name: caller.spec.function
        for name, caller in sorted(vars(manager.hook).items())
        if isinstance(caller, pluggy.HookCaller) and caller.spec is not None
    }


HOOKS = hook_specs(get_plugin_manager())


def signature(name: str, function: Callable[..., object]) -> str:
    parameters = ", ".join(f"{p.name}: {p.annotation}" for p in inspect.signature(function).parameters.values())
    return f"def {name}({parameters}) -> {inspect.signature(function).return_annotation}"


def documentation_problem(name: str, function: Callable[..., object], text: str) -> str | None:
    if f"## {name}(" not in text:
        return f"docs/plugins.md has no section for {name}"
    if signature(name, function) not in text:
        return f"docs/plugins.md does not show {signature(name, function)!r}"
    return None


def has_hook_test(name: str, tests: str) -> bool:
    return re.search(rf"def test_hook_{name}\b", tests) is not None


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hook_is_documented_with_its_signature(hook: str) -> None:
    problem = documentation_problem(hook, HOOKS[hook], DOCS.read_text())
    assert problem is None, problem


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_every_hook_has_a_test(hook: str) -> None:
    tests = "\n".join(path.read_text() for path in TESTS.glob("test_*.py"))
    assert has_hook_test(hook, tests), f"no test_hook_{hook}"


def test_the_meta_tests_see_every_hookspec_whatever_its_name() -> None:
    # Every function of the spec module marked @hookspec is a hook the meta-tests check ...
    marked = {
        name
        for name, value in vars(hookspecs).items()
        if inspect.isfunction(value) and hasattr(value, f"{hookspecs.hookspec.project_name}_spec")
    }
    assert marked and marked <= set(HOOKS)

    # ... and so is a hook with any other name, added by any module: it would need its docs and test.
    def before_publish(batch: object) -> bool:  # type: ignore[empty-body]
        """A hook not named register_*."""

    later = types.ModuleType("later_specs")
    later.before_publish = hookspec(before_publish)  # type: ignore[attr-defined]
    manager = get_plugin_manager()
    manager.add_hookspecs(later)
    found = hook_specs(manager)
    assert set(found) == set(HOOKS) | {"before_publish"}
    missing = documentation_problem("before_publish", found["before_publish"], DOCS.read_text())
    assert missing == "docs/plugins.md has no section for before_publish"
    documented = "## before_publish(batch)\n\n```python\ndef before_publish(batch: object) -> bool\n```\n"
    assert documentation_problem("before_publish", found["before_publish"], documented) is None
    assert not has_hook_test("before_publish", "def test_hook_before_publishing(): ...")
    assert has_hook_test("before_publish", "def test_hook_before_publish(): ...")


class ThrowAwayPlugin:
    @hookimpl
    def register_crowd_adapters(self, register):  # type: ignore[no-untyped-def]
        register(CrowdAdapter("throwaway", "a test adapter", lambda settings, directory: settings["backend"]))

    @hookimpl
    def register_backbones(self, register):  # type: ignore[no-untyped-def]
        register(Backbone("constant", "a test backbone", lambda config: config))

    @hookimpl
    def register_commands(self, cli):  # type: ignore[no-untyped-def]
        @cli.command("hello-from-plugin")
        def hello() -> None:
            typer.echo("hello from a plugin")


@pytest.fixture
def plugins() -> Plugins:
    manager = get_plugin_manager()
    plugin = ThrowAwayPlugin()
    manager.register(plugin, name="throwaway")
    yield Plugins(manager)
    manager.unregister(plugin)


def test_hook_register_crowd_adapters(plugins: Plugins) -> None:
    assert {"mock", "throwaway"} <= set(plugins.crowd_adapters.names())
    sentinel = object()
    assert plugins.create_crowd("throwaway", {"backend": sentinel}, Path(".")) is sentinel
    with pytest.raises(PluginError, match="no crowd adapter named 'nope'.*mock"):
        plugins.crowd_adapters.get("nope")


def test_hook_register_backbones(plugins: Plugins) -> None:
    assert {"pixels", "resnet18", "constant"} <= set(plugins.backbones.names())
    assert plugins.backbones.get("constant").create("config") == "config"  # type: ignore[arg-type]


def test_hook_register_commands(plugins: Plugins) -> None:
    cli = typer.Typer()

    @cli.command()
    def base() -> None:
        pass

    plugins.add_commands(cli)
    result = CliRunner().invoke(cli, ["hello-from-plugin"])
    assert result.exit_code == 0 and "hello from a plugin" in result.output


def test_a_name_registered_twice_is_an_error() -> None:
    manager = get_plugin_manager()

    class Duplicate:
        @hookimpl
        def register_crowd_adapters(self, register):  # type: ignore[no-untyped-def]
            register(CrowdAdapter("mock", "impostor", lambda settings, directory: None))

    manager.register(Duplicate())
    with pytest.raises(PluginError, match="'mock' is registered twice"):
        Plugins(manager).crowd_adapters  # noqa: B018


def test_hook_implementation_without_spec_is_rejected() -> None:
    manager = get_plugin_manager()

    class Misspelled:
        @hookimpl
        def register_crowd_adaptors(self, register):  # type: ignore[no-untyped-def]
            pass

    manager.register(Misspelled())
    with pytest.raises(Exception, match="unknown hook"):
        manager.check_pending()


def test_blocked_plugins_are_not_loaded() -> None:
    plugins = Plugins(get_plugin_manager(blocked=["mock"]))
    assert "mock" not in plugins.crowd_adapters.names()
    assert "pixels" in plugins.backbones.names()


def test_describe_lists_entry_point_plugins_with_versions() -> None:
    infos = Plugins().describe(include_builtin=True)
    mock = next(info for info in infos if info.name == "mock")
    assert mock.distribution == "lsun-crowd-mock" and mock.version == "0.1.0" and not mock.builtin
    assert "register_crowd_adapters" in mock.hooks
    assert any(info.builtin and info.name == "lsun_crowd.backbones" for info in infos)
    assert all(not info.builtin for info in Plugins().describe())
