"""Building a peft config from recipe settings, with the recipe's mistakes reported in its own terms."""

from __future__ import annotations

import dataclasses

from xtune.methods.common import check_settings, uses_checkpointing

# Fields peft sets itself or that the engine decides; a recipe does not set them.
RESERVED = {"task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision",
            "inference_mode"}


def build_config(config_cls, method: str, settings: dict, **fixed):
    """`config_cls(task_type='CAUSAL_LM', **settings, **fixed)` after checking every setting is a field."""
    allowed = [f.name for f in dataclasses.fields(config_cls) if f.name not in RESERVED
               and f.name not in fixed]
    check_settings(method, settings, allowed)
    return config_cls(task_type="CAUSAL_LM", **settings, **fixed)


def wrap(model, config):
    """The peft model, with gradient checkpointing still able to reach the (frozen) input embeddings."""
    from peft import get_peft_model

    if type(model).__name__.endswith("ForSequenceClassification"):
        config.task_type = "SEQ_CLS"  # a reward model: peft then trains and saves its new score head too
    if uses_checkpointing(model):
        model.enable_input_require_grads()
    return get_peft_model(model, config)
