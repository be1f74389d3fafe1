"""The base every registry entry builds on: a name, a description, and the plugin that registered it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class Entry:
    """Fields every entry has. `plugin` and `module` are filled in by the registry, never by the plugin."""

    kind: ClassVar[str] = "entry"
    name: str
    description: str = ""
    plugin: str = field(default="", compare=False)  # distribution that provided it ("xtune" for built-ins)
    module: str = field(default="", compare=False)  # pluggy plugin (module) name that registered it

    def validate(self) -> None:
        """Raise ValueError on a malformed entry; subclasses add their own checks."""
        if not isinstance(self.name, str) or not self.name.strip() or self.name != self.name.strip():
            raise ValueError(
                f"{self.kind} name must be a non-empty string without surrounding spaces, got {self.name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
