"""The tables that hold registered entries by name, with the plugin that registered each."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from xtune.errors import RegistryError, did_you_mean
from xtune.registry.entries import ENTRY_TYPES, Entry


def import_object(path: str) -> Any:
    """Import ``"package.module:attribute"`` (the form registry entries use for code)."""
    module_name, _, attr = path.partition(":")
    if not attr:
        raise RegistryError(f"import path {path!r} must look like 'package.module:name'")
    module = importlib.import_module(module_name)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise RegistryError(f"module {module_name!r} has no attribute {attr!r} (from {path!r})") from None


class Table:
    """Entries of one kind by name. Registration never overwrites: a second name is an error naming both."""

    def __init__(self, entry_type: type[Entry]):
        self.entry_type = entry_type
        self._entries: dict[str, Entry] = {}

    def add(self, entry: Entry, plugin: str, module: str) -> Entry:
        if not isinstance(entry, self.entry_type):
            raise RegistryError(
                f"plugin {plugin!r} registered a {type(entry).__name__} where a "
                f"{self.entry_type.__name__} is expected"
            )
        try:
            entry.validate()
        except ValueError as exc:
            raise RegistryError(f"plugin {plugin!r}: {exc}") from None
        existing = self._entries.get(entry.name)
        if existing is not None:
            raise RegistryError(
                f"{entry.kind} {entry.name!r} from plugin {plugin!r} is already registered by plugin "
                f"{existing.plugin!r}",
                hint="rename one of them, or disable a plugin with XTUNE_LOAD_PLUGINS",
            )
        entry = dataclasses.replace(entry, plugin=plugin, module=module)
        self._entries[entry.name] = entry
        return entry

    def remove_from(self, module: str) -> None:
        """Drop every entry a plugin module added (used when that plugin fails halfway)."""
        self._entries = {k: v for k, v in self._entries.items() if v.module != module}

    def get(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            raise RegistryError(f"unknown {self.entry_type.kind} {name!r}",
                                hint=did_you_mean(str(name), self._entries)) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)


class Registry:
    """All tables together. Built by `xtune.plugins.get_registry()`; tests build their own."""

    def __init__(self) -> None:
        self.tables: dict[str, Table] = {kind: Table(t) for kind, t in ENTRY_TYPES.items()}

    def __getattr__(self, kind: str) -> Table:
        tables = self.__dict__.get("tables", {})
        if kind in tables:
            return tables[kind]
        raise AttributeError(kind)

    def remove_from(self, module: str) -> None:
        for table in self.tables.values():
            table.remove_from(module)

    def provided_by(self, module: str) -> dict[str, list[str]]:
        """What one plugin module registered, by kind (for `xtune plugins`)."""
        return {kind: [e.name for e in table if e.module == module] for kind,
                table in self.tables.items() if any(e.module == module for e in table)}
