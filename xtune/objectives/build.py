"""A recipe's objective: its registry entry, its settings over the entry's defaults, the built object.

Recipes without an `objective` section train `sft`. Settings the objective's class does not take are one
ConfigError naming the closest ones, before any model is loaded.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

from xtune.objectives.settings import unknown
from xtune.registry import import_object


@dataclass
class BuiltObjective:
    entry: Any  # the Objective registry entry
    settings: dict
    objective: Any  # the object whose loss(llm, batch, reference) the engine calls


def objective_settings(cfg, registry) -> tuple[Any, dict]:
    """(entry, settings) of `cfg.objective` (`dict(type=NAME, ...)`; no section: sft)."""
    section = dict(cfg.get("objective") or {})
    name = section.pop("type", "sft")
    entry = registry.objectives.get(name)
    settings = {**dict(entry.defaults), **section}
    cls = import_object(entry.loss)
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown(name, settings, [n for n in params if n != "self"])
    return entry, settings


def build_objective(cfg, registry) -> BuiltObjective:
    entry, settings = objective_settings(cfg, registry)
    return BuiltObjective(entry, settings, import_object(entry.loss)(**settings))
