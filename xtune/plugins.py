"""The plugin manager: built-in plugins, third-party plugins from entry points, and the registry they fill.

Built-ins (`DEFAULT_PLUGINS`) register through the same hooks as outside plugins. Third parties
declare an entry point in group ``xtune``; ``XTUNE_LOAD_PLUGINS`` (a comma list of entry point or
distribution names, or "" for none) chooses which of them load. A plugin that fails to import, to
register or to add its commands is recorded with its error and left out, and xtune keeps working
without it. Hooks are called through pluggy's relay one plugin at a time (so every entry is attributed
to its plugin): plugins run in the order they were added, a `tryfirst` implementation before the others
and a `trylast` one after, and hook wrappers wrap each call. A function marked as a hook whose name no
hook has (a typo) is reported with the closest hook name.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from xtune import __version__, hookspecs
from xtune.errors import XtuneError, closest
from xtune.registry import ENTRY_TYPES, Registry

DEFAULT_PLUGINS = ("xtune.default_plugins.models", "xtune.default_plugins.datasets",
                   "xtune.default_plugins.templates", "xtune.default_plugins.methods",
                   "xtune.default_plugins.deepspeed", "xtune.default_plugins.recipes",
                   "xtune.default_plugins.objectives", "xtune.default_plugins.conversions",
                   "xtune.default_plugins.rewards")
ENTRY_POINT_GROUP = "xtune"
LOAD_ENV = "XTUNE_LOAD_PLUGINS"


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin, as `xtune plugins` shows it."""

    name: str  # pluggy name: module path for built-ins, entry point name for third parties
    package: str  # distribution that ships it
    version: str
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class PluginSystem:
    """A pluggy manager plus what xtune knows about each plugin (package, version, failures)."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("xtune")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.warnings: list[str] = []  # problems not tied to one plugin (an unknown XTUNE_LOAD_PLUGINS name)
        self._registry: Registry | None = None
        self._order: list[str] = []  # plugin names in the order they were added

    # -- loading ---------------------------------------------------------------------------------
    def add(self, plugin: object, name: str, package: str, version: str) -> None:
        """Register a plugin object (module or class instance) under `name`."""
        info = PluginInfo(name=name, package=package, version=version)
        self.info[name] = info
        try:
            self.pm.register(plugin, name=name)
        except (
            Exception) as exc:  # pluggy rejects unknown hooks only in check_pending; this is signature errors
            info.error = f"{type(exc).__name__}: {exc}"
            return
        self._order.append(name)
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])
        known = [h for h in dir(hookspecs) if h.startswith("register_")]
        for hook in info.hooks:
            if hook not in known:
                near = closest(hook, known, n=1)
                info.warnings.append(f"implements {hook!r}, which is not an xtune hook"
                                     + (f" (did you mean {near[0]!r}?)" if near else "")
                                     + "; it is never called")

    def load_defaults(self) -> None:
        for module_name in DEFAULT_PLUGINS:
            self.add(importlib.import_module(module_name), module_name, "xtune", __version__)

    def load_entry_points(self, selection: str | None = None) -> None:
        """Load third-party plugins. `selection` is XTUNE_LOAD_PLUGINS: None loads all, "" none."""
        wanted = None if selection is None else {s.strip() for s in selection.split(",") if s.strip()}
        seen = set()
        available = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
        names = {ep.name for ep in available} | {ep.dist.name for ep in available if ep.dist}
        for unknown in sorted((wanted or set()) - names):
            near = closest(unknown, names)
            self.warnings.append(f"{LOAD_ENV} names {unknown!r}, which is no installed plugin"
                                 + (f" (did you mean {', '.join(near)}?)" if near
                                    else f" (installed: {', '.join(sorted(names)) or 'none'})"))
        for ep in available:
            dist = ep.dist.name if ep.dist else ep.name
            version = ep.dist.version if ep.dist else "?"
            if wanted is not None and ep.name not in wanted and dist not in wanted:
                continue
            if ep.name in seen or ep.name in self.info:
                continue  # the same distribution found twice on sys.path
            seen.add(ep.name)
            try:
                plugin = ep.load()
            except Exception as exc:
                error = f"failed to import {ep.value}: {type(exc).__name__}: {exc}"
                self.info[ep.name] = PluginInfo(ep.name, dist, version, error=error)
                continue
            self.add(plugin, ep.name, dist, version)

    # -- the registry ----------------------------------------------------------------------------
    @property
    def registry(self) -> Registry:
        return self.get_registry()

    def get_registry(self) -> Registry:
        """The registry, built on first use (registration failures are known only after this)."""
        if self._registry is None:
            self._registry = self.build_registry()
        return self._registry

    def build_registry(self) -> Registry:
        """Call every plugin's register hooks, plugin by plugin, so a failure is pinned on its plugin."""
        registry = Registry()
        for plugin_name in self._plugins_in_call_order():
            info = self.info[plugin_name]
            if info.error:
                continue
            try:
                self._register_one(registry, plugin_name, info.package)
            except Exception as exc:
                registry.remove_from(plugin_name)
                message = exc.message if isinstance(exc, XtuneError) else f"{type(exc).__name__}: {exc}"
                info.error = f"failed to register: {message}"
                continue
            info.registered = registry.provided_by(plugin_name)
        return registry

    def _plugins_in_call_order(self) -> list[str]:
        """Plugins in the order they were added, those with a `tryfirst` register hook first and those
        with a `trylast` one last (the first registration of a name wins)."""

        def rank(name: str) -> int:
            impls = [i for caller in self.pm.get_hookcallers(self.pm.get_plugin(name)) or []
                     if caller.name.startswith("register_") for i in caller.get_hookimpls()
                     if i.plugin_name == name]
            return 0 if any(i.tryfirst for i in impls) else 2 if any(i.trylast for i in impls) else 1

        names = [n for n in self._order if self.pm.get_plugin(n) is not None]
        return sorted(names, key=rank)

    def call_for(self, hook: str, plugin_name: str, **kwargs):
        """Call `hook` of one plugin through pluggy's relay (its own hookimpl options and every plugin's
        hook wrappers apply)."""
        caller = getattr(self.pm.hook, hook)
        others = [impl.plugin for impl in caller.get_hookimpls() if impl.plugin_name != plugin_name
                  and not (impl.hookwrapper or impl.wrapper)]
        return self.pm.subset_hook_caller(hook, remove_plugins=others)(**kwargs)

    def _implements(self, hook: str, plugin_name: str) -> bool:
        """Whether the plugin has a plain implementation of `hook` (a wrapper alone registers nothing)."""
        return any(impl.plugin_name == plugin_name and not (impl.hookwrapper or impl.wrapper)
                   for impl in getattr(self.pm.hook, hook).get_hookimpls())

    def _register_one(self, registry: Registry, plugin_name: str, package: str) -> None:
        for kind in ENTRY_TYPES:
            hook = f"register_{kind}"
            if not self._implements(hook, plugin_name):
                continue
            table = registry.tables[kind]

            def register(entry, _table=table):
                return _table.add(entry, plugin=package, module=plugin_name)

            self.call_for(hook, plugin_name, register=register)

    def add_commands(self, subparsers) -> None:
        """Each plugin's `register_commands`, guarded: a plugin whose hook raises is disabled and reported,
        and every other command keeps working."""
        for plugin_name in list(self._order):
            info = self.info[plugin_name]
            if info.error or not self._implements("register_commands", plugin_name):
                continue
            try:
                self.call_for("register_commands", plugin_name, subparsers=subparsers)
            except Exception as exc:
                info.error = f"failed to add its commands: {type(exc).__name__}: {exc}"

    def failures(self) -> list[PluginInfo]:
        self.get_registry()
        return [info for info in self.info.values() if info.error]

    def warn_failures(self, stream=None) -> None:
        """One line per broken plugin, misspelt hook or unknown plugin name on stderr; commands go on."""
        stream = stream or sys.stderr
        for line in self.warnings:
            print(f"Warning: {line}", file=stream)
        for info in self.info.values():
            for line in info.warnings:
                print(f"Warning: plugin {info.name!r} ({info.package}) {line}", file=stream)
        for info in self.failures():
            print(
                f"Warning: plugin {info.name!r} ({info.package}) is disabled: {info.error} "
                f"(choose plugins with {LOAD_ENV}=name1,name2 or {LOAD_ENV}= for none)",
                file=stream,
            )


_SYSTEM: PluginSystem | None = None


def get_plugin_system(refresh: bool = False) -> PluginSystem:
    """The process-wide plugin system: built-ins plus the entry points XTUNE_LOAD_PLUGINS allows."""
    global _SYSTEM
    if _SYSTEM is None or refresh:
        system = PluginSystem()
        system.load_defaults()
        system.load_entry_points(os.environ.get(LOAD_ENV))
        _SYSTEM = system
    return _SYSTEM


def get_registry() -> Registry:
    return get_plugin_system().registry
