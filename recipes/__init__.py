"""xtune's generated recipes (installed as the package `xtune.recipes`). Do not edit: see tools/gen_recipes.py."""
