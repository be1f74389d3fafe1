"""Vision-language models: loading (a Hugging Face VLM, or a composed LLaVA), the processor, and which
parts train.

A recipe whose model adapter has `model_kind='vlm'` adds a `vlm = dict(...)` section (`VLM_DEFAULTS`):
the vision tower stays frozen (`freeze_vision`), the projector trains (`train_projector`), the tuning
method works on the language model (LoRA / QLoRA targets only its linear layers; `vision_lora=True`
adds the vision tower's), and `stage` names the LLaVA stage: 'pretrain' trains the projector alone
(method 'freeze' with no layers), 'finetune' the projector and the language model. With `vision_model`
set the model is composed (`xtune.models.llava_compose`) from the recipe's language model, that vision
encoder and a new projector; otherwise `pretrained_model_name_or_path` is a VLM loaded with
transformers' `AutoModelForImageTextToText`. The parts are the adapter's module paths.
"""

from __future__ import annotations

import re

from xtune.errors import ConfigError

VLM_DEFAULTS = dict(stage="finetune", freeze_vision=True, train_projector=True, vision_lora=False,
                    vision_model=None, llm_adapter=None, projector_from=None, vision_feature_layer=-2,
                    processor=None)
STAGES = ("pretrain", "finetune")


def is_vlm(adapter) -> bool:
    return adapter is not None and adapter.model_kind == "vlm"


def vlm_settings(cfg) -> dict:
    """The recipe's `vlm` section over the defaults; unknown keys and a wrong stage are ConfigErrors."""
    given = dict(cfg.get("vlm") or {})
    unknown = sorted(set(given) - set(VLM_DEFAULTS))
    if unknown:
        raise ConfigError(f"vlm: unknown settings {', '.join(map(repr, unknown))}",
                          hint=f"accepted: {', '.join(VLM_DEFAULTS)}")
    settings = {**VLM_DEFAULTS, **given}
    if settings["stage"] not in STAGES:
        raise ConfigError(f"vlm.stage={settings['stage']!r} must be one of {', '.join(STAGES)}")
    return settings


def _llm_adapter(settings: dict, registry):
    name = settings["llm_adapter"]
    return registry.model_adapters.get(name) if name else None


def vlm_processor(cfg, registry):
    """The processor of a vision-language recipe: the model's own, or LLaVA's over the language model's
    tokenizer and the vision encoder's image processor."""
    from xtune.models.loading import load_tokenizer
    from xtune.models.processors import load_processor
    from xtune.models.sources import resolve_source

    settings = vlm_settings(cfg)
    tok_cfg = dict(cfg["tokenizer"])
    source = cfg.get("model_source", "auto")
    if settings["vision_model"]:
        from xtune.models.llava_compose import compose_processor

        tokenizer = load_tokenizer(tok_cfg, _llm_adapter(settings, registry), source, registry=registry)
        return compose_processor(tokenizer, resolve_source(settings["vision_model"], source).path)
    path = resolve_source(tok_cfg.get("pretrained_model_name_or_path", ""), source).path
    require_vision(path)
    processor = load_processor(path, trust_remote_code=bool(tok_cfg.get("trust_remote_code")),
                               **dict(settings["processor"] or {}))
    tokenizer = processor.tokenizer
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = tok_cfg.get("padding_side") or "right"
    return processor


def require_vision(path) -> None:
    """A ConfigError when the local model folder at `path` holds a text model (its config.json has no
    vision part), which a VLM recipe cannot train: transformers would otherwise fail deep inside building
    a processor from a plain tokenizer."""
    import json
    from pathlib import Path

    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    config = Path(path) / "config.json"
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # not a local model folder: the loader says what is wrong
    if not isinstance(data, dict) or "vision_config" in data or data.get("model_type") in (
            MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES):
        return
    arch = ", ".join(data.get("architectures") or []) or data.get("model_type") or "unknown architecture"
    raise ConfigError(f"pretrained_model_name_or_path: the model at {str(path)!r} ({arch}) is a text model, "
                      "not a vision-language model: a VLM recipe needs one with a vision part",
                      hint="use a text recipe for this model (`xtune list-cfg`), or point "
                      "pretrained_model_name_or_path at a vision-language model")


def _leaf(path: str) -> str:
    return path.rsplit(".", 1)[-1]


def load_vlm(cfg, model_cfg: dict, adapter, registry, *, load_in_bits=None, method=None,
             precision: str = "float32"):
    """The recipe's vision-language model, quantised (QLoRA) only in its language model."""
    from transformers import AutoModelForImageTextToText

    from xtune.models.loading import enable_checkpointing, load_model

    settings = vlm_settings(cfg)
    source = cfg.get("model_source", "auto")
    if not settings["vision_model"]:
        keep = (adapter.vision_tower, adapter.projector, "lm_head")
        return load_model(model_cfg, registry=registry, adapter=adapter, load_in_bits=load_in_bits,
                          method=method, source=source, precision=precision,
                          auto_class=AutoModelForImageTextToText, unquantized=keep)
    from xtune.models.llava_compose import compose_llava
    from xtune.models.sources import resolve_source

    checkpointing = model_cfg.pop("gradient_checkpointing", False)
    llm = load_model(model_cfg, registry=registry, adapter=_llm_adapter(settings, registry),
                     load_in_bits=load_in_bits, method=method, source=source, precision=precision)
    processor = vlm_processor(cfg, registry)
    llava = compose_llava(llm, resolve_source(settings["vision_model"], source).path, processor.tokenizer,
                          projector_from=settings["projector_from"],
                          feature_layer=int(settings["vision_feature_layer"]))
    if checkpointing:
        enable_checkpointing(llava)
    return llava


def module_at(model, path: str):
    """The submodule at a dotted `path` of the (possibly peft-wrapped) model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    node = base
    for part in path.split("."):
        node = getattr(node, part, None)
        if node is None:
            raise ConfigError(f"the model has no module {path!r}", hint="fix the model adapter's part paths")
    return node


def lora_targets(model, adapter, requested, vision_lora: bool) -> str:
    """A peft `target_modules` regex: the linear layers of the language model (and of the vision tower
    without its projector, with `vision_lora`); 'auto' follows the adapter ('all-linear' by default)."""
    import torch

    wanted = adapter.lora_target_modules if requested in (None, "auto") else requested
    names = None if wanted == "all-linear" else ({wanted} if isinstance(wanted, str) else set(wanted))
    prefixes = [adapter.language_model] + ([adapter.vision_tower] if vision_lora else [])
    leaves = set()
    for name, module in model.named_modules():
        inside = (any(name.startswith(p + ".") for p in prefixes)
                  and not name.startswith(adapter.projector + "."))
        if inside and isinstance(module, torch.nn.Linear) and (names is None or _leaf(name) in names):
            leaves.add(_leaf(name))
    if not leaves:
        raise ConfigError(f"target_modules {wanted!r} matches no linear layer of the language model",
                          hint="use 'auto' or the names of its linear layers (q_proj, v_proj, ...)")
    return (f"^(?!{re.escape(adapter.projector)}\\.)(?:{'|'.join(map(re.escape, prefixes))})\\.(?:.*\\.)?"
            f"(?:{'|'.join(sorted(leaves))})$")


def _set_trainable(module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def apply_vlm_method(model, method, settings: dict, adapter, vlm: dict):
    """The tuning method on the language model, then the vision tower and projector as `vlm` says."""
    from xtune.methods.common import apply_resolved

    if vlm["stage"] == "pretrain" and (method.name != "freeze" or settings.get("trainable_layers")
                                       or settings.get("trainable_modules")):
        raise ConfigError(f"vlm.stage='pretrain' trains the projector alone, not method {method.name!r}",
                          hint="use method='freeze' with trainable_layers=0, or stage='finetune'")
    settings = dict(settings)
    if method.uses_peft and "target_modules" in settings:
        settings["target_modules"] = lora_targets(model, adapter, settings["target_modules"],
                                                  bool(vlm["vision_lora"]))
        saved = list(settings.get("modules_to_save") or ())
        saved += [_leaf(adapter.projector)] if vlm["train_projector"] else []
        saved += [_leaf(adapter.vision_tower)] if not vlm["freeze_vision"] else []
        settings["modules_to_save"] = saved or None

    def parts(trained) -> None:
        if method.uses_peft:
            return  # peft trains exactly its adapters and modules_to_save
        _set_trainable(module_at(trained, adapter.vision_tower), not vlm["freeze_vision"])
        _set_trainable(module_at(trained, adapter.projector), bool(vlm["train_projector"]))

    return apply_resolved(model, method, settings, adapter, finish=parts)


def image_prompt_of(model, registry) -> str:
    """The image prompt of a loaded model's family ("": its processor's image token)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for adapter in registry.model_adapters:
        if adapter.model_kind == "vlm" and model_type in adapter.model_types:
            return adapter.image_prompt
    return ""
