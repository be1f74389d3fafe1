"""Virtual-token methods through peft: prefix tuning, prompt tuning and P-tuning. The base model stays
frozen; only the virtual token embeddings (and P-tuning's prompt encoder) train."""

from __future__ import annotations

from xtune.methods.peft_config import build_config, wrap


def apply_prefix_tuning(model, settings: dict, adapter=None):
    from peft import PrefixTuningConfig

    return wrap(model, build_config(PrefixTuningConfig, "prefix_tuning", dict(settings)))


def apply_prompt_tuning(model, settings: dict, adapter=None):
    from peft import PromptTuningConfig

    return wrap(model, build_config(PromptTuningConfig, "prompt_tuning", dict(settings)))


def apply_p_tuning(model, settings: dict, adapter=None):
    from peft import PromptEncoderConfig

    return wrap(model, build_config(PromptEncoderConfig, "p_tuning", dict(settings)))
