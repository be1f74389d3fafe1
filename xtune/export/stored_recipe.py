"""`convert pth_to_hf` with the recipe a checkpoint was trained with, not whatever settings are given now.

Every checkpoint written by `xtune train` stores its resolved recipe (`meta.xtune_recipe`: the text after
the overrides, the dotted overrides, and the method settings that define the trained tensors). The
conversion rebuilds the model from that text; overrides given to the conversion still apply (a local copy
of the base model, say), but one that changes what the tensors mean — `method_cfg.lora_alpha=128` on a
checkpoint trained at 16 would write an adapter scaled 8x too strongly — is refused.
"""

from __future__ import annotations

import logging

from xtune.errors import ConfigError

log = logging.getLogger("xtune")


def recipe_for(stored: dict | None, recipe_path, options: list[str]):
    """The Config to convert with: from the checkpoint's stored recipe when it has one."""
    from xtune.recipe import load_recipe, load_recipe_text

    if not stored:
        return load_recipe(recipe_path, options)
    if stored.get("name") != recipe_path.stem:
        log.warning("the checkpoint was trained with recipe %s; converting with the settings it stored",
                    stored.get("name"))
    return load_recipe_text(stored["text"], f"<recipe {stored.get('name')} stored in the checkpoint>",
                            [*stored.get("dotted_options", []), *options])


def check_against_stored(stored: dict | None, plan, cfg, registry) -> None:
    """Refuse a conversion whose method settings (as its run plan resolves them, `xtune.plan`) differ from
    the ones the checkpoint was trained with (checked before any model loads)."""
    from xtune.models.build import model_adapter
    from xtune.plan import auto_targets

    if not stored:
        return
    now = {"type": plan.method.name, **plan.method.settings}
    then = dict(stored.get("method") or {})
    if then.get("target_modules") == "auto":  # stored by xtune before the plan resolved it
        then["target_modules"] = auto_targets(cfg, registry)
    wrong = [f"method_cfg.{key}={now.get(key)!r} contradicts the checkpoint, which was trained with "
             f"{key}={then.get(key)!r}" for key in sorted(set(now) | set(then))
             if now.get(key) != then.get(key)]
    adapter = getattr(model_adapter(cfg, registry), "name", None)
    if stored.get("model_adapter") not in (None, adapter):
        wrong.append(f"model_adapter={adapter!r} contradicts the checkpoint, which was trained with "
                     f"{stored['model_adapter']!r}")
    if wrong:
        raise ConfigError("; ".join(wrong), hint="leave those options out: the checkpoint knows its settings")
