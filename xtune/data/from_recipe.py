"""The data settings and tokenizer of a recipe, for the dataset tools (`check-custom-dataset`, `log-dataset`).

The recipe is loaded by the engine's loader (`xtune.recipe.load_recipe`), so `--cfg-options`
behave exactly as in `xtune train`: `data_path=...` or `pretrained_model_name_or_path=LOCAL` rewrite
the top-level setting before the recipe's sections are built from it.
"""

from __future__ import annotations

from typing import Any

from xtune.errors import ConfigError


def load_recipe_cfg(name_or_path: str, registry, options: list[str] | None = None):
    from xtune.recipe import load_recipe
    from xtune.recipe_files import resolve_recipe

    return load_recipe(resolve_recipe(name_or_path, registry), options or [])


def dataset_cfg(recipe) -> dict[str, Any]:
    """The recipe's `train_dataset` dict, with the top-level seed and self-cognition names when it lacks
    them: what training and the dataset tools both hand to the data pipeline."""
    if "train_dataset" not in recipe:
        raise ConfigError("the recipe has no train_dataset section")
    cfg = dict(recipe["train_dataset"])
    for key in ("self_cognition_name", "self_cognition_author", "seed"):
        if key not in cfg and key in recipe:
            cfg[key] = recipe[key]
    return cfg


def load_tokenizer(recipe, registry):
    """The recipe's tokenizer, loaded as training loads it (pad token set)."""
    from xtune.models.build import model_adapter
    from xtune.models.loading import load_tokenizer as load

    if "tokenizer" not in recipe:
        raise ConfigError("the recipe has no tokenizer section")
    tok_cfg = dict(recipe["tokenizer"])
    try:
        return load(tok_cfg, model_adapter(recipe, registry) if "model" in recipe else None,
                    recipe.get("model_source", "auto"))
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"could not load the tokenizer {tok_cfg.get('pretrained_model_name_or_path')!r}: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                          hint="pass --cfg-options pretrained_model_name_or_path=LOCAL_FOLDER") from None
