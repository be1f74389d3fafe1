"""LoRA, QLoRA and DoRA through peft. QLoRA is LoRA on a base that `xtune.models` loaded in 4-bit NF4
with double quantisation; here it also gets peft's k-bit preparation (fp32 norms and head, input grads).
DoRA is LoRA with `use_dora=True`.

On mixtures of experts whose experts transformers 5 fuses into 3-D tensors (Mixtral, DeepSeek-V2/V3),
peft reaches the experts and the router through `target_parameters` (its ParamWrapper), which has no
dropout: a recipe with `lora_dropout` > 0 is refused here in the recipe's terms, not with peft's words."""

from __future__ import annotations

from xtune.methods.common import uses_checkpointing
from xtune.methods.peft_config import build_config, wrap


def target_modules(value, adapter):
    """'auto' -> the model adapter's choice ('all-linear' unless the family says otherwise)."""
    if value in (None, "auto"):
        value = adapter.lora_target_modules if adapter is not None else "all-linear"
    return list(value) if isinstance(value, (list, tuple)) else value


def apply_lora(model, settings: dict, adapter=None):
    from peft import LoraConfig, prepare_model_for_kbit_training

    settings = dict(settings)
    settings["target_modules"] = target_modules(settings.get("target_modules"), adapter)
    if adapter is not None and adapter.modules_to_save and "modules_to_save" not in settings:
        settings["modules_to_save"] = list(adapter.modules_to_save)
    method = "dora" if settings.get("use_dora") else "lora"
    config = build_config(LoraConfig, method, settings)
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=uses_checkpointing(model),
            gradient_checkpointing_kwargs={"use_reentrant": False})
    try:
        return wrap(model, config)
    except ValueError as exc:
        if "does not work with lora_dropout" not in str(exc):
            raise
        from xtune.errors import ConfigError

        raise ConfigError(
            f"method_cfg.lora_dropout={settings.get('lora_dropout')}: LoRA on the fused experts of this "
            f"mixture of experts ({type(model).__name__}) cannot use dropout (peft's ParamWrapper)",
            hint="--cfg-options method_cfg.lora_dropout=0") from None
