"""IA3 (Liu et al., 2022): learned rescaling vectors on attention keys/values and the MLP, through peft.
peft picks the target modules by model family unless the recipe names them."""

from __future__ import annotations

from xtune.methods.peft_config import build_config, wrap


def apply(model, settings: dict, adapter=None):
    from peft import IA3Config

    return wrap(model, build_config(IA3Config, "ia3", dict(settings)))
