"""Recipes as configs: loading a recipe file with `--cfg-options` overrides that reach every use of a setting.

Finding recipes and reading their metadata without running them is `xtune.recipe_files`.
"""

from xtune.recipe.load import load_recipe, load_recipe_text, recipe_source
from xtune.recipe.overrides import parse_overrides, rewrite_source
from xtune.recipe.settings import ENGINE_SETTINGS

__all__ = ["ENGINE_SETTINGS", "load_recipe", "load_recipe_text", "parse_overrides", "recipe_source",
           "rewrite_source"]
