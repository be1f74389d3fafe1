"""The data settings and tokenizer of a recipe, for the dataset tools (`check-custom-dataset`, `log-dataset`).

The recipe is loaded by the engine's loader (`xtune.engine.config.load_recipe`), so `--cfg-options`
behave exactly as in `xtune train`: `data_path=...` or `pretrained_model_name_or_path=LOCAL` rewrite
the top-level setting before the recipe's sections are built from it.
"""

from __future__ import annotations

from typing import Any

from xtune.errors import ConfigError


def load_recipe_cfg(name_or_path: str, options: list[str] | None = None):
    from xtune.engine.config import load_recipe
    from xtune.plugins import get_registry
    from xtune.recipe_files import resolve_recipe

    return load_recipe(resolve_recipe(name_or_path, get_registry()), options or [])


def dataset_cfg(recipe) -> dict[str, Any]:
    """The recipe's `train_dataset` dict, with the top-level self-cognition names when it lacks them."""
    if "train_dataset" not in recipe:
        raise ConfigError("the recipe has no train_dataset section")
    cfg = dict(recipe["train_dataset"])
    for key in ("self_cognition_name", "self_cognition_author", "seed"):
        if key not in cfg and key in recipe:
            cfg[key] = recipe[key]
    return cfg


def load_tokenizer(recipe):
    """The recipe's tokenizer, loaded as training loads it (pad token set)."""
    if "tokenizer" not in recipe:
        raise ConfigError("the recipe has no tokenizer section")
    tok_cfg = dict(recipe["tokenizer"])
    try:
        from xtune.models.loading import load_tokenizer as engine_loader
    except ImportError:
        engine_loader = None
    try:
        if engine_loader is not None:
            return engine_loader(tok_cfg, source=recipe.get("model_source", "auto"))
        from transformers import AutoTokenizer

        path = tok_cfg.pop("pretrained_model_name_or_path")
        return AutoTokenizer.from_pretrained(path, **tok_cfg)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"could not load the tokenizer {tok_cfg.get('pretrained_model_name_or_path')!r}: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                          hint="pass --cfg-options pretrained_model_name_or_path=LOCAL_FOLDER") from None
