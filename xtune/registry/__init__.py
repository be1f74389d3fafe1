"""Typed registry entries and the tables that hold them, with the plugin that registered each.

Everything a recipe names by string — model adapter, model, dataset map, chat template, tuning method,
DeepSpeed preset, objective, reward function, and the recipes themselves — is an entry here (`entries`),
kept by name in a `Table` that refuses duplicates and records provenance (`tables`). `xtune.plugins` fills a
`Registry`.
"""

from xtune.registry.entries import (
    ENTRY_TYPES,
    ChatTemplate,
    CheckpointConversion,
    DatasetMap,
    DeepSpeedPreset,
    Entry,
    Model,
    ModelAdapter,
    Objective,
    Recipe,
    RewardFunction,
    TuningMethod,
)
from xtune.registry.tables import Registry, Table, import_object

__all__ = ["ENTRY_TYPES", "ChatTemplate", "CheckpointConversion", "DatasetMap", "DeepSpeedPreset", "Entry",
           "Model", "ModelAdapter", "Objective", "Recipe", "Registry", "RewardFunction", "Table",
           "TuningMethod", "import_object"]
