"""Building the plugin manager, the registries plugins fill, and the typed façade over them.

The core never calls ``pm.hook`` directly: it goes through :class:`Plugins`, which has one typed
method per hook. Built-in features are ordinary hook-implementation modules, registered the same
way as a vendor's package, which arrives through the ``lsun_crowd`` entry-point group.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import pluggy
from pydantic import BaseModel, ValidationError

from lsun_crowd import __version__, hookspecs
from lsun_crowd.crowd import CrowdError

if TYPE_CHECKING:
    import typer

    from lsun_crowd.config import ModelConfig
    from lsun_crowd.crowd import CrowdBackend
    from lsun_crowd.embed import EmbeddingModel

PROJECT_NAME = "lsun_crowd"
BUILTIN_MODULES = ("lsun_crowd.backbones",)


class PluginError(RuntimeError):
    """A plugin is missing, registered twice, or failed to build what was asked."""


@dataclass(frozen=True)
class CrowdAdapter:
    """A crowd platform. ``create(settings, project_dir)`` builds its backend object."""

    name: str
    description: str
    create: Callable[[Mapping[str, Any], Path], CrowdBackend]


@dataclass(frozen=True)
class Backbone:
    """An image backbone. ``create(model_config)`` builds the embedding model."""

    name: str
    description: str
    create: Callable[[ModelConfig], EmbeddingModel]


RegisterCrowdAdapter = Callable[[CrowdAdapter], None]
RegisterBackbone = Callable[[Backbone], None]


T = TypeVar("T", CrowdAdapter, Backbone)
Settings = TypeVar("Settings", bound=BaseModel)


def parse_crowd_settings(model: type[Settings], settings: Mapping[str, Any]) -> Settings:
    """An adapter's ``[crowd.settings]`` read into its pydantic ``model``; a bad value fails with
    the dotted field and pydantic's reason, as a :class:`~lsun_crowd.crowd.CrowdError`."""
    try:
        return model.model_validate(dict(settings))
    except ValidationError as error:
        first = error.errors()[0]
        raise CrowdError(f"crowd.settings.{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


class Registry(Generic[T]):
    """Name-keyed registrations of one kind; a name registered twice is an error."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, entry: T) -> None:
        if entry.name in self._entries:
            raise PluginError(f"{self.kind} {entry.name!r} is registered twice")
        self._entries[entry.name] = entry

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise PluginError(f"no {self.kind} named {name!r} (installed: {known})") from None

    def names(self) -> list[str]:
        return sorted(self._entries)


@dataclass(frozen=True)
class PluginInfo:
    name: str
    distribution: str
    version: str
    builtin: bool
    hooks: tuple[str, ...]


def get_plugin_manager(blocked: Iterable[str] = ()) -> pluggy.PluginManager:
    """Build a fresh plugin manager: specs, built-ins, then every ``lsun_crowd`` entry point."""
    manager = pluggy.PluginManager(PROJECT_NAME)
    manager.add_hookspecs(hookspecs)
    for name in blocked:
        manager.set_blocked(name)
    for module_name in BUILTIN_MODULES:
        if not manager.is_blocked(module_name):
            manager.register(importlib.import_module(module_name), name=module_name)
    manager.load_setuptools_entrypoints(PROJECT_NAME)
    manager.check_pending()
    return manager


class Plugins:
    """The typed façade: one method per hook, registries built once per manager."""

    def __init__(self, manager: pluggy.PluginManager | None = None) -> None:
        self.manager = manager if manager is not None else get_plugin_manager()
        self._crowd_adapters: Registry[CrowdAdapter] | None = None
        self._backbones: Registry[Backbone] | None = None

    @property
    def crowd_adapters(self) -> Registry[CrowdAdapter]:
        if self._crowd_adapters is None:
            registry: Registry[CrowdAdapter] = Registry("crowd adapter")
            self.manager.hook.register_crowd_adapters(register=registry.add)
            self._crowd_adapters = registry
        return self._crowd_adapters

    @property
    def backbones(self) -> Registry[Backbone]:
        if self._backbones is None:
            registry: Registry[Backbone] = Registry("backbone")
            self.manager.hook.register_backbones(register=registry.add)
            self._backbones = registry
        return self._backbones

    def add_commands(self, cli: typer.Typer) -> None:
        self.manager.hook.register_commands(cli=cli)

    def create_crowd(self, name: str, settings: Mapping[str, Any], project_dir: Path) -> CrowdBackend:
        return self.crowd_adapters.get(name).create(settings, project_dir)

    def describe(self, include_builtin: bool = False) -> list[PluginInfo]:
        """Loaded plugins with their distributions and versions, as ``plugins --all`` lists them."""
        distributions = {id(plugin): dist for plugin, dist in self.manager.list_plugin_distinfo()}
        infos = []
        for name, plugin in self.manager.list_name_plugin():
            if plugin is None:
                continue
            hooks = tuple(sorted(caller.name for caller in self.manager.get_hookcallers(plugin) or []))
            dist = distributions.get(id(plugin))
            if dist is not None:
                infos.append(PluginInfo(name, dist.project_name, dist.version, False, hooks))
            elif include_builtin:
                infos.append(PluginInfo(name, "lsun-crowd", __version__, True, hooks))
        return sorted(infos, key=lambda info: (info.builtin, info.name))
