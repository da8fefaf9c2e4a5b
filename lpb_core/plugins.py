"""Builds a fresh plugin manager for each run and collects what its plugins register.

Registration hooks are called through pluggy (``manager.hook``), so ``tryfirst``/``trylast`` and hook
wrappers work as pluggy documents; each implementation receives a ``register`` callback bound to its
own plugin, so every registered name knows who added it. Every object is checked against its
contract (``lpb_core.contracts``) as it is registered. Problems are collected, not raised one by one:
``lpb plugins`` shows them next to the plugin, a breed refuses to start on any of them.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import inspect
import re
import traceback
from typing import Any, Iterable

import attrs
import pluggy

from lpb_core import hookspecs
from lpb_core.contracts import CHECKS
from lpb_core.errors import InputError, PluginError, PluginErrors, PluginFailure

ENTRY_POINT_GROUP = hookspecs.PROJECT


class UnknownNameError(InputError):
    """A name given by the user that no plugin registered."""


class DuplicateName(PluginError):
    """Two plugins registered the same name: a problem of both, since either may be the one to change."""

    def __init__(self, message: str, plugins: tuple[str, str]):
        super().__init__(message)
        self.plugins = plugins


@attrs.frozen
class PluginInfo:
    """Where a plugin comes from, for listings and for naming it in errors."""

    name: str  # its name in the plugin manager: the entry point's name, or the object's for plugins passed in
    distribution: str | None = None
    version: str | None = None
    entry_point: str | None = None  # "name = module", as in the distribution's entry points

    @property
    def label(self) -> str:
        """How runtime errors name it: the distribution and version, e.g. ``lpb-myplugins 0.1.0``."""
        return f"{self.distribution} {self.version}" if self.distribution else self.name

    @property
    def origin(self) -> str:
        """How contract errors name it: the package and the entry point to look at."""
        if self.entry_point:
            return f"plugin {self.label} (entry point {self.entry_point})"
        return f"plugin {self.name}"


class Registry:
    """Named objects of one kind, each checked against its contract and remembering who registered it."""

    def __init__(self, kind: str):
        self.kind = kind
        self._objects: dict[str, Any] = {}
        self._owners: dict[str, PluginInfo] = {}

    def add(self, obj: Any, plugin: PluginInfo) -> None:
        """Register ``obj``; a PluginError names the plugin, its entry point and what is wrong."""
        name = getattr(obj, "name", None)
        described = f"{self.kind} {name!r} ({type(obj).__name__ if not isinstance(obj, type) else obj.__name__})"
        if not isinstance(name, str) or not name:
            raise PluginError(f"{plugin.origin}: registered a {self.kind} without a name: {obj!r:.80} "
                              "(give it a unique `name` string)")
        missing = CHECKS[self.kind](obj)
        if missing:
            raise PluginError(f"{plugin.origin}: {described}: {'; '.join(missing)} (contracts: lpb_core/contracts.py)")
        if name in self._objects and self._owners[name].name == plugin.name:
            raise PluginError(f"{plugin.origin}: registers {self.kind} {name!r} twice; each {self.kind} it registers "
                              "needs a name of its own")
        if name in self._objects:
            first = self._owners[name]
            raise DuplicateName(
                f"{self.kind} {name!r} is registered by two plugins: {first.origin} and {plugin.origin}; rename "
                f"it in one, or leave one out with --disable-plugin {first.name} or --disable-plugin {plugin.name} "
                "(which drops everything that plugin registers)", (first.name, plugin.name))
        self._objects[name] = obj
        self._owners[name] = plugin

    def get(self, name: str, where: str = "command line", field: str | None = None) -> Any:
        try:
            return self._objects[name]
        except KeyError:
            known = ", ".join(self.names()) or "none"
            raise UnknownNameError(where, f"unknown {self.kind} {name!r}; known: {known}", field) from None

    def owner(self, name: str) -> PluginInfo:
        return self._owners[name]

    def names(self) -> list[str]:
        return list(self._objects)

    def items(self):
        return self._objects.items()

    def __contains__(self, name: object) -> bool:
        return name in self._objects

    def __len__(self) -> int:
        return len(self._objects)


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, plus where each plugin came from and the problems found while loading."""

    def __init__(self):
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.problems: dict[str, list[str]] = {}  # plugin name -> what is wrong with it
        self._listed_only: set[tuple[str, str]] = set()  # (plugin, problem) shown by `lpb plugins` but raised elsewhere

    def info(self, name: str) -> PluginInfo:
        return self.infos.get(name) or PluginInfo(name)

    def problem(self, name: str, message: str, listed_only: bool = False) -> None:
        self.problems.setdefault(name, []).append(message)
        if listed_only:
            self._listed_only.add((name, message))

    def errors(self) -> list[PluginError]:
        return [PluginError(message) for name, messages in self.problems.items() for message in messages
                if (name, message) not in self._listed_only]

    def call_registration(self, hook_name: str, **kwargs: Any) -> None:
        """Call a registration hook through pluggy; an implementation that raises becomes its plugin's problem."""
        caller = getattr(self.hook, hook_name)
        for impl in caller.get_hookimpls():
            if not getattr(impl.function, "_lpb_attributed", False):
                impl.function = self._attributed(impl, hook_name)  # noqa: pluggy calls impl.function
        caller(**kwargs)

    def _attributed(self, impl: pluggy.HookImpl, hook_name: str):
        """``impl.function`` receiving a ``register`` bound to its own plugin; an ordinary implementation
        that raises is recorded as a problem of its plugin (wrappers are left to pluggy)."""
        function, plugin = impl.function, self.info(impl.plugin_name)
        position = impl.argnames.index("register") if "register" in impl.argnames else None
        is_wrapper = impl.wrapper or impl.hookwrapper

        def call(*args, **kwargs):
            args = list(args)
            if position is not None and isinstance(args[position], Registration):
                args[position] = args[position].bound(plugin)
            if is_wrapper:
                return function(*args, **kwargs)
            try:
                return function(*args, **kwargs)
            except Exception as exc:
                where = traceback.extract_tb(exc.__traceback__)[-1]
                self.problem(plugin.name, f"{plugin.origin}: {hook_name} raised {type(exc).__name__}: {exc} "
                             f"({where.filename}:{where.lineno})")
                return None

        call._lpb_attributed = True
        return call


class Registration:
    """The ``register`` callback a registration hook receives, bound to the plugin being called."""

    def __init__(self, registry: Registry, manager: PluginManager, plugin: PluginInfo | None = None):
        self.registry, self.manager, self.plugin = registry, manager, plugin

    def bound(self, plugin: PluginInfo) -> "Registration":
        return Registration(self.registry, self.manager, plugin)

    def __call__(self, obj: Any) -> None:
        plugin = self.plugin or PluginInfo("unknown plugin")
        try:
            self.registry.add(obj, plugin)
        except DuplicateName as exc:  # listed under both plugins, raised once
            self.manager.problem(exc.plugins[0], str(exc), listed_only=True)
            self.manager.problem(exc.plugins[1], str(exc))
        except PluginError as exc:  # kept, so every problem of every plugin is listed at once
            self.manager.problem(plugin.name, str(exc))


@attrs.frozen
class PluginSet:
    """One run's plugin manager and the registries filled from it."""

    manager: PluginManager
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

    def owner_label(self, kind: str, name: str) -> str | None:
        """``lpb-myplugins 0.1.0`` for the plugin that registered the ``kind`` called ``name``."""
        for registry in self.registries().values():
            if registry.kind == kind and name in registry:
                return registry.owner(name).label
        return None

    def attribute(self, failure: PluginFailure) -> PluginFailure:
        """Name the plugin behind a failure, if the code that raised it could not."""
        if failure.plugin is None:
            failure.plugin = self.owner_label(failure.kind, failure.name)
        return failure

    def events(self) -> "EventHooks":
        return EventHooks(self)


class EventHooks:
    """The run's event hooks (``hooks.lpb_generation_finished(event=...)``), called as pluggy orders them; an
    implementation that raises becomes a PluginFailure naming its logger or plugin, raised once every other
    implementation has had the event (so one broken logger costs no other logger, events.jsonl included)."""

    def __init__(self, plugins: PluginSet):
        self._plugins = plugins

    def __getattr__(self, hook_name: str):
        caller = getattr(self._plugins.manager.hook, hook_name)

        def call(**kwargs):
            impls = caller.get_hookimpls()
            if any(impl.hookwrapper or impl.wrapper or not set(impl.argnames) <= kwargs.keys() for impl in impls):
                return self._call_together(caller, kwargs)  # pluggy's own machinery, and its own errors
            first = None  # (failure, exception) of the first implementation that raised
            for impl in reversed(impls):  # pluggy calls the last registered (and tryfirst) first
                try:
                    impl.function(*(kwargs[name] for name in impl.argnames))
                except Exception as exc:
                    first = first or (self._failure(caller, exc, impl), exc)
            if first:
                raise first[0] from first[1]

        return call

    def _call_together(self, caller, kwargs):
        try:
            return caller(**kwargs)
        except Exception as exc:
            failure = self._failure(caller, exc, culprit(caller.get_hookimpls(), exc))
            if failure is None:
                raise
            raise failure from exc

    def _failure(self, caller, exc: Exception, impl: pluggy.HookImpl | None) -> PluginFailure | None:
        """``exc`` as a PluginFailure naming the logger or plugin of ``impl``; None when no plugin raised it."""
        if impl is None:
            return None
        manager = self._plugins.manager
        if impl.plugin_name.startswith(LOGGER_PREFIX):
            name = impl.plugin_name[len(LOGGER_PREFIX):]
            kind, plugin = "logger", self._plugins.owner_label("logger", name)
        else:
            name, kind, plugin = impl.plugin_name, "plugin", manager.info(impl.plugin_name).label
            plugin = plugin if plugin != name else None
        return PluginFailure.raised(kind, name, exc, plugin=plugin, hook=caller.name)


LOGGER_PREFIX = "logger:"  # a logger joins a run's plugin manager as "logger:<name>"


def culprit(impls: list[pluggy.HookImpl], exc: BaseException) -> pluggy.HookImpl | None:
    """The hook implementation in whose code ``exc`` was raised, read from its traceback."""
    by_code: dict[Any, list[pluggy.HookImpl]] = {}
    for impl in impls:
        function = getattr(impl.function, "__func__", impl.function)
        by_code.setdefault(getattr(function, "__code__", None), []).append(impl)
    tb = exc.__traceback__
    while tb is not None:
        candidates = by_code.get(tb.tb_frame.f_code, [])
        for impl in candidates:
            owner = getattr(impl.function, "__self__", None)
            if len(candidates) == 1 or owner is tb.tb_frame.f_locals.get("self"):
                return impl
        tb = tb.tb_next
    return None


_REGISTRATION_HOOKS = {
    "operators": ("lpb_register_mutation_operators", "mutation operator"),
    "scorers": ("lpb_register_fitness_scorers", "fitness scorer"),
    "selection_strategies": ("lpb_register_selection_strategies", "selection strategy"),
    "loggers": ("lpb_register_loggers", "logger"),
    "backends": ("lpb_register_model_backends", "model backend"),
    "similarity_filters": ("lpb_register_similarity_filters", "similarity filter"),
}


def plugin_name(plugin: object) -> str:
    """A readable manager name for a plugin object passed in directly (not from an entry point)."""
    name = getattr(plugin, "__name__", None)  # a module
    return name if isinstance(name, str) else f"{type(plugin).__module__}.{type(plugin).__qualname__}"


def get_plugin_manager(disabled: Iterable[str] = (), extra_plugins: Iterable[object] = ()) -> PluginManager:
    """A new manager with the hookspecs, every ``lpb`` entry point not disabled, and ``extra_plugins``.

    A plugin that cannot be imported or registered is recorded in ``manager.problems``, not raised,
    so the others still load and ``lpb plugins`` can say what is wrong.
    """
    manager = PluginManager()
    entry_points = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    installed = sorted({ep.name for ep in entry_points})
    for name in disabled:
        if name not in installed:
            raise UnknownNameError("command line", f"no installed plugin {name!r} to disable; installed: "
                                   f"{', '.join(installed)}", "--disable-plugin")
        manager.set_blocked(name)
    for ep in entry_points:
        dist = ep.dist
        info = PluginInfo(ep.name, dist.metadata["name"] if dist else None, dist.version if dist else None,
                          f"{ep.name} = {ep.value}")
        if manager.is_blocked(ep.name):
            continue
        if ep.name in manager.infos:
            manager.problem(ep.name, f"{info.origin}: the entry point name {ep.name!r} is taken by "
                            f"{manager.infos[ep.name].origin}; it is not loaded")
            continue
        manager.infos[ep.name] = info
        try:
            plugin = ep.load()
            manager.register(plugin, name=ep.name)
        except Exception as exc:  # an import error, or pluggy refusing a hook implementation
            manager.problem(ep.name, f"{info.origin}: cannot be loaded: {one_line(exc)}")
            continue
        for hook in unmarked_hooks(plugin):
            manager.problem(ep.name, f"{info.origin}: {hook} is not marked @hookimpl, so lpb never calls it")
    for plugin in extra_plugins:
        name, suffix = plugin_name(plugin), 1
        while manager.has_plugin(name) or name in manager.infos:
            suffix += 1
            name = f"{plugin_name(plugin)}#{suffix}"
        manager.infos[name] = PluginInfo(name)
        try:
            manager.register(plugin, name=name)
        except Exception as exc:
            manager.problem(name, f"plugin {name}: cannot be registered: {one_line(exc)}")
            continue
        for hook in unmarked_hooks(plugin):
            manager.problem(name, f"plugin {name}: {hook} is not marked @hookimpl, so lpb never calls it")
    _check_pending(manager)
    return manager


def unmarked_hooks(plugin: object) -> list[str]:
    """Functions of a plugin named as an lpb hook but not marked ``@hookimpl``: pluggy skips them silently."""
    return [name for name in dir(plugin) if name.startswith(f"{hookspecs.PROJECT}_") and hasattr(hookspecs, name)
            and callable(getattr(plugin, name)) and getattr(getattr(plugin, name), hookspecs.IMPL_MARKER, None) is None]


def one_line(exc: Exception) -> str:
    """An exception as one line; pluggy's refusal of an argument the hook does not pass adds those it does."""
    text = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    hook = re.search(r"for hook '(\w+)'", text)
    if isinstance(exc, pluggy.PluginValidationError) and hook and hasattr(hookspecs, hook.group(1)):
        passed = ", ".join(inspect.signature(getattr(hookspecs, hook.group(1))).parameters)
        if "can not be found in the hookspec" in text:
            text += f" ({hook.group(1)} passes: {passed})"
    unknown = re.search(r"unknown hook '(\w+)'", text)
    if isinstance(exc, pluggy.PluginValidationError) and unknown:
        names = [n for n in dir(hookspecs) if n.startswith(f"{hookspecs.PROJECT}_")]
        close = difflib.get_close_matches(unknown.group(1), names, n=1, cutoff=0.6)
        text += f" (did you mean {close[0]}?)" if close else f" (lpb's hooks: {', '.join(names)})"
    return f"{type(exc).__name__}: {text}"


def _check_pending(manager: PluginManager) -> None:
    """Hook implementations without a hookspec (a misspelt hook) make their plugin a problem."""
    while True:
        try:
            manager.check_pending()
            return
        except pluggy.PluginValidationError as exc:
            name = manager.get_name(exc.plugin)
            manager.problem(name, f"{manager.info(name).origin}: {one_line(exc)}")
            manager.unregister(exc.plugin)


def load_plugins(disabled: Iterable[str] = (), extra_plugins: Iterable[object] = (), strict: bool = True) -> PluginSet:
    """Everything one run needs from plugins, built fresh (no state is shared between runs).

    ``strict``: raise every plugin problem at once (PluginErrors); otherwise they stay in ``manager.problems``.
    """
    manager = get_plugin_manager(disabled, extra_plugins)
    registries = {}
    for field, (hook, kind) in _REGISTRATION_HOOKS.items():
        registries[field] = Registry(kind)
        manager.call_registration(hook, register=Registration(registries[field], manager))
    if strict and manager.problems:
        raise PluginErrors(manager.errors())
    return PluginSet(manager=manager, **registries)


def describe(plugins: PluginSet) -> list[dict]:
    """Each plugin with its distribution, version, hooks, the names it registered and what is wrong with it."""
    manager = plugins.manager
    registered = {name: plugin for name, plugin in manager.list_name_plugin() if plugin is not None}
    rows = []
    for name in sorted(set(registered) | set(manager.problems)):
        info = manager.info(name)
        plugin = registered.get(name)
        names = {kind: sorted(n for n, _ in registry.items() if registry.owner(n).name == name)
                 for kind, registry in plugins.registries().items()}
        problems = manager.problems.get(name, [])
        rows.append({
            "name": name,
            "distribution": info.distribution,
            "version": info.version,
            "entry_point": info.entry_point,
            "hooks": sorted(caller.name for caller in manager.get_hookcallers(plugin) or []) if plugin else [],
            "registers": {kind: found for kind, found in names.items() if found},
            "ok": not problems,
            "problems": problems,
        })
    return rows
