"""What `check-custom-dataset RECIPE` and `log-dataset RECIPE` both start from: the recipe's training data,
built exactly as `xtune train` builds it (same overrides, tokenizer, template and packing)."""

from __future__ import annotations


def recipe_dataset(name_or_path: str, cfg_options: list[str]):
    """(the recipe's train_dataset settings, its tokenizer, the processed rows)."""
    from xtune.data.from_recipe import dataset_cfg, load_recipe_cfg
    from xtune.data.pipeline import build_train_dataset
    from xtune.models.build import recipe_tokenizer
    from xtune.plugins import get_registry

    registry = get_registry()
    recipe = load_recipe_cfg(name_or_path, registry, cfg_options)
    cfg = dataset_cfg(recipe, registry)
    tokenizer = recipe_tokenizer(recipe, registry)
    return cfg, tokenizer, build_train_dataset(cfg, tokenizer, registry=registry)
