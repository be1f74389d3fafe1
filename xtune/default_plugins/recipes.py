"""xtune's own recipes: the files tools/gen_recipes.py generated, listed through their index.json."""

from xtune.hookspecs import hookimpl
from xtune.recipe_files import builtin_recipe_dir, recipes_in_dir


@hookimpl
def register_recipes(register):
    for recipe in recipes_in_dir(builtin_recipe_dir()):
        register(recipe)
