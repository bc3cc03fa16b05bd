"""The plugin surface: every hook documented with its exact signature and tested by name."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lsun_crowd import hookspecs
from lsun_crowd.hookspecs import hookimpl
from lsun_crowd.plugins import Backbone, CrowdAdapter, PluginError, Plugins, get_plugin_manager

DOCS = Path(__file__).resolve().parents[1] / "docs" / "plugins.md"
HOOKS = sorted(
    name for name, value in vars(hookspecs).items() if name.startswith("register_") and inspect.isfunction(value)
)


def _signature(name: str) -> str:
    function = getattr(hookspecs, name)
    parameters = ", ".join(f"{p.name}: {p.annotation}" for p in inspect.signature(function).parameters.values())
    return f"def {name}({parameters}) -> None"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook: str) -> None:
    text = DOCS.read_text()
    assert f"## {hook}(" in text, f"docs/plugins.md has no section for {hook}"
    assert _signature(hook) in text, f"docs/plugins.md does not show {_signature(hook)!r}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook: str) -> None:
    tests = "\n".join(path.read_text() for path in Path(__file__).parent.glob("test_*.py"))
    assert re.search(rf"def test_hook_{hook}\b", tests), f"no test_hook_{hook}"


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
