"""Recipes shipped by xtune-tinyllama; registered by `xtune_tinyllama.plugin.register_recipes`."""
