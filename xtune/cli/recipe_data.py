"""What `check-custom-dataset RECIPE` and `log-dataset RECIPE` both start from: the recipe's training data,
built exactly as `xtune train` builds it (same overrides, tokenizer, template and packing)."""

from __future__ import annotations


def recipe_dataset(name_or_path: str, cfg_options: list[str]):
    """(the recipe's train_dataset settings, its tokenizer, the processed rows); a vision-language recipe's
    rows come with their pictures checked and their image tokens counted."""
    from xtune.data.from_recipe import build_dataset, load_recipe_cfg
    from xtune.models.build import model_adapter, recipe_processor, recipe_tokenizer
    from xtune.plan import data_settings, resolve_plan
    from xtune.plugins import get_registry

    registry = get_registry()
    recipe = load_recipe_cfg(name_or_path, registry, cfg_options)
    cfg = data_settings(resolve_plan(recipe, registry), recipe, registry)  # as `xtune train` builds them
    processor = recipe_processor(recipe, registry)
    tokenizer = processor.tokenizer if processor is not None else recipe_tokenizer(recipe, registry)
    prompt = model_adapter(recipe, registry).image_prompt if processor is not None else ""
    return cfg, tokenizer, build_dataset(cfg, tokenizer, registry=registry, processor=processor,
                                         image_prompt=prompt)
