"""The data settings of a recipe, for training and the dataset tools (`check-custom-dataset`, `log-dataset`).

The recipe is loaded as `xtune train` loads it (`xtune.recipe.load_recipe`), so `--cfg-options`
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


def dataset_cfg(recipe, registry) -> dict[str, Any]:
    """The recipe's `train_dataset` dict, with the top-level seed and self-cognition names when it lacks
    them, `rows` (pairs, unpaired, prompts) when its objective trains on preference data, and the
    `required_columns` of its reward functions: what training and the dataset tools both hand to the data
    pipeline."""
    if "train_dataset" not in recipe:
        raise ConfigError("the recipe has no train_dataset section")
    cfg = dict(recipe["train_dataset"])
    for key in ("self_cognition_name", "self_cognition_author", "seed"):
        if key not in cfg and key in recipe:
            cfg[key] = recipe[key]
    for key in ("skip_bad_records", "ignore_images"):  # top-level too: --cfg-options skip_bad_records=True
        if recipe.get(key):
            cfg[key] = True
    rows = objective_rows(recipe, registry=registry)
    if rows != "sft":
        cfg.setdefault("rows", rows)
    if rows == "prompts" and (needs := reward_needs(recipe, registry=registry)):
        cfg.setdefault("required_columns", needs)
    return cfg


def build_dataset(data_cfg: dict, tokenizer, *, registry, processor=None, image_prompt: str = ""):
    """A recipe's training rows: the vision-language pipeline when there is a processor (with the family's
    image prompt), else the text one. Training and the dataset tools build them the same way."""
    if processor is not None:
        from xtune.data.vlm_pipeline import build_image_dataset

        return build_image_dataset(data_cfg, processor, registry=registry, image_prompt=image_prompt)
    from xtune.data.pipeline import build_train_dataset

    return build_train_dataset(data_cfg, tokenizer, registry=registry)


def objective_rows(recipe, *, registry) -> str:
    """The kind of rows the recipe's objective trains on ('sft' without an `objective` section)."""
    name = (recipe.get("objective") or {}).get("type", "sft")
    if name == "sft":
        return "sft"
    return registry.objectives.get(name).data  # an unknown name: the closest ones


def reward_needs(recipe, *, registry) -> list[str]:
    """The record columns the objective's registered reward functions read (`RewardFunction.needs`), so that
    a prompt record without one is named when the data is built, not when its reward is first computed.
    User functions (`pkg.module:function`) declare none; the objective resolves and checks every spec."""
    section = dict(recipe.get("objective") or {})
    entry = registry.objectives.get(section.get("type", "sft"))
    specs = {**dict(entry.defaults), **section}.get("reward_funcs") or []
    needs: list[str] = []
    for spec in specs if isinstance(specs, (list, tuple)) else [specs]:
        name = spec.get("type") if isinstance(spec, dict) else spec
        if isinstance(name, str) and name in registry.reward_functions:
            needs += [n for n in registry.reward_functions.get(name).needs if n not in needs]
    return needs
