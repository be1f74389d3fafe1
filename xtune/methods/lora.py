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


INITS = ("default", "gaussian", "pissa", "olora", "loftq")  # and pissa_niter_N


def apply_lora(model, settings: dict, adapter=None):
    from peft import LoraConfig, prepare_model_for_kbit_training

    settings = dict(settings)
    init = init_name(settings.pop("init", "default"))
    if init not in ("default", "loftq"):  # loftq: after wrapping, from the 4-bit layers (below)
        settings.setdefault("init_lora_weights", init)
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
        with _fixed_rng(init):
            wrapped = wrap(model, config)
    except ValueError as exc:
        if "does not work with lora_dropout" not in str(exc):
            raise
        from xtune.errors import ConfigError

        raise ConfigError(
            f"method_cfg.lora_dropout={settings.get('lora_dropout')}: LoRA on the fused experts of this "
            f"mixture of experts ({type(model).__name__}) cannot use dropout (peft's ParamWrapper)",
            hint="--cfg-options method_cfg.lora_dropout=0") from None
    if init == "loftq":
        from xtune.methods.lora_init import loftq

        loftq(wrapped)
    if init.startswith("pissa") or init == "olora":
        from xtune.methods.lora_init import keep_initial_adapter

        keep_initial_adapter(wrapped)
    return wrapped


def _fixed_rng(init: str):
    """PiSSA's randomised SVD (pissa_niter_N) draws random numbers: from a fixed seed, apart from the run's
    stream, so that `convert pth_to_hf` rebuilds the very base the adapters were trained on."""
    import contextlib

    import torch

    if not init.startswith("pissa_niter"):
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.random.fork_rng(devices=[]))
    torch.manual_seed(0)
    return stack


def init_name(value) -> str:
    """The recipe's `init` as peft's `init_lora_weights` value; one ConfigError for anything else."""
    import re

    from xtune.errors import ConfigError

    name = "default" if value in (None, True, "default", "true") else str(value).lower()
    if name in INITS or re.fullmatch(r"pissa_niter_\d+", name):
        return name
    raise ConfigError(f"method_cfg.init={value!r} is not one of {', '.join(INITS)} (or pissa_niter_N)")
