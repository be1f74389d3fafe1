"""The plugin manager: built-in plugins, third-party plugins from entry points, and the registry they fill.

Built-ins (`DEFAULT_PLUGINS`) register through the same hooks as outside plugins. Third parties
declare an entry point in group ``xtune``; ``XTUNE_LOAD_PLUGINS`` (a comma list of entry point or
distribution names, or "" for none) chooses which of them load. A plugin that fails to import or to
register is recorded with its error and left out, and xtune keeps working without it.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from xtune import __version__, hookspecs
from xtune.errors import XtuneError
from xtune.registry import ENTRY_TYPES, Registry

DEFAULT_PLUGINS = (
    "xtune.default_plugins.models",
    "xtune.default_plugins.datasets",
    "xtune.default_plugins.templates",
    "xtune.default_plugins.methods",
    "xtune.default_plugins.deepspeed",
    "xtune.default_plugins.recipes",
)
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

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class PluginSystem:
    """A pluggy manager plus what xtune knows about each plugin (package, version, failures)."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("xtune")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self._registry: Registry | None = None

    # -- loading ---------------------------------------------------------------------------------
    def add(self, plugin: object, name: str, package: str, version: str) -> None:
        """Register a plugin object (module or class instance) under `name`."""
        info = PluginInfo(name=name, package=package, version=version)
        self.info[name] = info
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # pluggy rejects unknown hooks only in check_pending; this is signature errors
            info.error = f"{type(exc).__name__}: {exc}"
            return
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or [])

    def load_defaults(self) -> None:
        for module_name in DEFAULT_PLUGINS:
            self.add(importlib.import_module(module_name), module_name, "xtune", __version__)

    def load_entry_points(self, selection: str | None = None) -> None:
        """Load third-party plugins. `selection` is XTUNE_LOAD_PLUGINS: None loads all, "" none."""
        wanted = None if selection is None else {s.strip() for s in selection.split(",") if s.strip()}
        seen = set()
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
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
                self.info[ep.name] = PluginInfo(
                    ep.name, dist, version, error=f"failed to import {ep.value}: {type(exc).__name__}: {exc}"
                )
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
        for plugin_name, _plugin in self.pm.list_name_plugin():
            info = self.info.get(plugin_name) or self.info.setdefault(
                plugin_name, PluginInfo(plugin_name, plugin_name, "?")
            )
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

    def _register_one(self, registry: Registry, plugin_name: str, package: str) -> None:
        for kind in ENTRY_TYPES:
            caller = getattr(self.pm.hook, f"register_{kind}")
            for impl in caller.get_hookimpls():
                if impl.plugin_name != plugin_name:
                    continue
                table = registry.tables[kind]

                def register(entry, _table=table):
                    return _table.add(entry, plugin=package, module=plugin_name)

                impl.function(**{arg: register for arg in impl.argnames if arg == "register"})

    def failures(self) -> list[PluginInfo]:
        self.get_registry()
        return [info for info in self.info.values() if info.error]

    def warn_failures(self, stream=None) -> None:
        """One line per broken plugin on stderr; commands go on without it."""
        stream = stream or sys.stderr
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
