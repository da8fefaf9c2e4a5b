"""Builds a fresh plugin manager for each run and collects what its plugins register."""

from __future__ import annotations

import importlib.metadata
from typing import Any, Iterable

import attrs
import pluggy

from lpb_core import hookspecs
from lpb_core.errors import InputError, PluginError

ENTRY_POINT_GROUP = hookspecs.PROJECT


class UnknownNameError(InputError):
    """A name given by the user that no plugin registered."""


class Registry:
    """Named objects of one kind, remembering which plugin registered each."""

    def __init__(self, kind: str):
        self.kind = kind
        self._objects: dict[str, Any] = {}
        self._owners: dict[str, str] = {}

    def add(self, name: str, obj: Any, plugin: str) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {plugin!r} registered a {self.kind} without a name: {obj!r}")
        if name in self._objects:
            raise PluginError(
                f"{self.kind} {name!r} is registered by two plugins: "
                f"{self._owners[name]!r} and {plugin!r}; disable one with --disable-plugin"
            )
        self._objects[name] = obj
        self._owners[name] = plugin

    def get(self, name: str, where: str = "command line", field: str | None = None) -> Any:
        try:
            return self._objects[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise UnknownNameError(where, f"unknown {self.kind} {name!r}; known: {known}", field) from None

    def owner(self, name: str) -> str:
        return self._owners[name]

    def names(self) -> list[str]:
        return list(self._objects)

    def items(self):
        return self._objects.items()

    def __contains__(self, name: object) -> bool:
        return name in self._objects

    def __len__(self) -> int:
        return len(self._objects)


@attrs.frozen
class PluginSet:
    """One run's plugin manager and the registries filled from it."""

    manager: pluggy.PluginManager
    operators: Registry
    scorers: Registry
    selection_strategies: Registry
    loggers: Registry
    backends: Registry
    similarity_filters: Registry

    def registries(self) -> dict[str, Registry]:
        return {
            "mutation_operators": self.operators,
            "fitness_scorers": self.scorers,
            "selection_strategies": self.selection_strategies,
            "loggers": self.loggers,
            "model_backends": self.backends,
            "similarity_filters": self.similarity_filters,
        }


_REGISTRATION_HOOKS = {
    "operators": ("lpb_register_mutation_operators", "mutation operator"),
    "scorers": ("lpb_register_fitness_scorers", "fitness scorer"),
    "selection_strategies": ("lpb_register_selection_strategies", "selection strategy"),
    "loggers": ("lpb_register_loggers", "logger"),
    "backends": ("lpb_register_model_backends", "model backend"),
    "similarity_filters": ("lpb_register_similarity_filters", "similarity filter"),
}


def get_plugin_manager(disabled: Iterable[str] = (), extra_plugins: Iterable[object] = ()) -> pluggy.PluginManager:
    """A new manager with the hookspecs, every ``lpb`` entry point not disabled, and ``extra_plugins``."""
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    installed = sorted({ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})
    for name in disabled:
        if name not in installed:
            raise UnknownNameError("command line", f"no installed plugin {name!r} to disable; installed: "
                                   f"{', '.join(installed)}", "--disable-plugin")
        manager.set_blocked(name)
    manager.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    for plugin in extra_plugins:
        manager.register(plugin)
    manager.check_pending()
    return manager


def collect(manager: pluggy.PluginManager, hook_name: str, kind: str) -> Registry:
    """Call one registration hook plugin by plugin, so every name knows the plugin that added it."""
    registry = Registry(kind)
    for impl in getattr(manager.hook, hook_name).get_hookimpls():
        def register(obj: Any, _plugin: str = impl.plugin_name) -> None:
            registry.add(getattr(obj, "name", None), obj, _plugin)

        impl.function(register=register)
    return registry


def load_plugins(disabled: Iterable[str] = (), extra_plugins: Iterable[object] = ()) -> PluginSet:
    """Everything one run needs from plugins, built fresh (no state is shared between runs)."""
    manager = get_plugin_manager(disabled, extra_plugins)
    registries = {field: collect(manager, hook, kind) for field, (hook, kind) in _REGISTRATION_HOOKS.items()}
    return PluginSet(manager=manager, **registries)


def describe(plugins: PluginSet) -> list[dict]:
    """Each plugin with its distribution, version, hooks and the names it registered, for ``lpb plugins``."""
    distributions = {id(plugin): dist for plugin, dist in plugins.manager.list_plugin_distinfo()}
    rows = []
    for name, plugin in sorted(plugins.manager.list_name_plugin(), key=lambda item: item[0]):
        if plugin is None:  # blocked
            continue
        dist = distributions.get(id(plugin))
        registered = {
            kind: sorted(n for n, _ in registry.items() if registry.owner(n) == name)
            for kind, registry in plugins.registries().items()
        }
        rows.append({
            "name": name,
            "distribution": dist.metadata["name"] if dist else None,
            "version": dist.version if dist else None,
            "hooks": sorted(caller.name for caller in plugins.manager.get_hookcallers(plugin) or []),
            "registers": {kind: names for kind, names in registered.items() if names},
        })
    return rows
