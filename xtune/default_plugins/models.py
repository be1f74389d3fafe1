"""Built-in model families and the checkpoints xtune has recipes for, read from `models.json`.

A family is a model adapter, matched by the `model_type` of the HF config: its default chat template,
LoRA targets, special-token and attention quirks. A model is a checkpoint of a family (its recipe-name
prefix, hub id, title, billions of parameters, instruction-tuned or base). The recipe generator
(`tools/gen_recipes.py`) reads these entries from the registry, so adding a family is one row in each
table of `models.json` (and its chat template, if new) followed by a regenerate. Architecture figures for
`xtune estimate` come from `xtune.default_plugins.architectures`, keyed by hub id.

Vision-language families (`kind` "vlm", with the module paths of their vision tower, projector and
language model) and the image encoders xtune composes into LLaVA models (`kind` "vision") are rows of the
sibling `models_vlm.json`, in the same two tables.

`trust_remote_code` marks families whose hub checkpoints need their own modelling code; their recipes set
`trust_remote_code = True` visibly, so running hub code is always the user's choice.
"""

import json
from importlib import resources

from xtune.default_plugins.architectures import ARCHITECTURES
from xtune.hookspecs import hookimpl
from xtune.registry import Model, ModelAdapter

CATALOGUES = ("models.json", "models_vlm.json")


def _catalogue() -> dict:
    tables: dict[str, list] = {"families": [], "models": []}
    for name in CATALOGUES:
        data = json.loads((resources.files("xtune.default_plugins") / name).read_text(encoding="utf-8"))
        for key, rows in tables.items():
            rows += data[key]
    return tables


def adapters(catalogue: dict) -> list[ModelAdapter]:
    out = []
    for row in catalogue["families"]:
        row = {k: tuple(v) if isinstance(v, list) else v for k, v in row.items()}
        types = ", ".join(row["model_types"])
        out.append(ModelAdapter(description=f"{row['name']} models (model_type {types})", **row))
    return out


def models(catalogue: dict) -> list[Model]:
    return [Model(description=row["title"], **row, **ARCHITECTURES.get(row["hub_id"], {}))
            for row in catalogue["models"]]


@hookimpl
def register_model_adapters(register):
    for adapter in adapters(_catalogue()):
        register(adapter)


@hookimpl
def register_models(register):
    for model in models(_catalogue()):
        register(model)
