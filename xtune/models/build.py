"""The one model builder: the trainable model of a recipe, and a model to run (chat, merge, GGUF import).

`build_trainable` serves training and `convert pth_to_hf` alike, so the parameter names of a checkpoint
always match the model it is converted into; it resolves the tuning method once and decides quantised
loading in one place. `load_for_inference` serves chat, merge and the GGUF import: inference with the KV
cache on, left padding, and the tokenizer taken from an adapter folder when it has one (that copy carries
the fine-tune's chat template).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xtune.errors import UsageError
from xtune.methods.common import apply_resolved
from xtune.models.loading import load_model
from xtune.models.quant import disable_bnb_cpu_repacking, quantization_config
from xtune.models.sources import resolve_source
from xtune.models.vlm import apply_vlm_method, is_vlm, load_vlm, vlm_processor, vlm_settings

log = logging.getLogger("xtune")

# Files whose presence in a folder means it carries its own tokenizer.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


@dataclass
class Trainable:
    """A recipe's model with its tuning method applied, and what was resolved on the way."""

    model: Any
    method: Any  # the TuningMethod entry
    settings: dict
    adapter: Any  # the ModelAdapter entry, or None


def model_adapter(cfg, registry):
    """The recipe's model adapter entry (None when the recipe names none)."""
    name = (cfg.get("model") or {}).get("adapter")
    return registry.model_adapters.get(name) if name else None


def recipe_tokenizer(cfg, registry):
    """The recipe's tokenizer, as training loads it (the adapter's pad token); a tokenizer that cannot be
    loaded is one ConfigError naming it, with the override that points at a local copy."""
    from xtune.errors import ConfigError
    from xtune.models.loading import load_tokenizer

    if "tokenizer" not in cfg:
        raise ConfigError("the recipe has no tokenizer section")
    tok_cfg = dict(cfg["tokenizer"])
    try:
        return load_tokenizer(tok_cfg, model_adapter(cfg, registry), cfg.get("model_source", "auto"),
                              registry=registry)
    except ConfigError:
        raise
    except Exception as exc:
        raise _load_error("tokenizer", tok_cfg.get("pretrained_model_name_or_path"), exc) from None


def build_trainable(cfg, registry, plan, *, precision: str = "float32",
                    for_export: bool = False) -> Trainable:
    """Load the recipe's base and apply its tuning method, as the run plan (`xtune.plan.RunPlan`) resolved
    them: the method and its settings, and the quantised base (its settings and bits decided once there).

    For export a PEFT method gets a full-precision base even for QLoRA: the adapter tensors do not depend
    on how the base was stored, and a 4-bit base cannot be saved as a plain model.
    """
    adapter = model_adapter(cfg, registry)
    method, settings = registry.tuning_methods.get(plan.method.name), dict(plan.method.settings)
    model_cfg = dict(cfg.model)
    model_cfg["quantization"] = dict(plan.model.quantization) or None
    bits = plan.model.load_in_bits
    if for_export:
        model_cfg["gradient_checkpointing"] = False
        if method.uses_peft:
            model_cfg["quantization"], bits = None, None
    if is_vlm(adapter):  # vision-language: its own loading and per-part trainability (xtune.models.vlm)
        vlm = load_vlm(cfg, model_cfg, adapter, registry, load_in_bits=bits, method=method if bits else None,
                       precision=precision)
        vlm = apply_vlm_method(vlm, method, settings, adapter, vlm_settings(cfg))
        return Trainable(vlm, method, settings, adapter)
    head = objective_head(cfg, registry)
    llm = load_model(model_cfg, registry=registry, adapter=adapter, load_in_bits=bits,
                     method=method if bits else None,
                     source=cfg.get("model_source", "auto"), precision=precision, head=head)
    if head == "score":
        llm.config.pad_token_id = recipe_tokenizer(cfg, registry).pad_token_id  # HF pooling needs it
    model = apply_resolved(llm, method, settings, adapter)
    if head == "score":
        from xtune.models.reward import train_score_head

        train_score_head(model)
    return Trainable(model, method, settings, adapter)


def objective_head(cfg, registry) -> str:
    """'causal_lm', or 'score' when the recipe's objective trains a reward model."""
    name = (cfg.get("objective") or {}).get("type", "sft")
    return registry.objectives.get(name).head if name != "sft" else "causal_lm"


def load_reward_model(path: str, *, precision: str = "float32", source: str = "auto"):
    """A finished reward model (full or adapter folder) to score with: see `xtune.models.reward`."""
    from xtune.models.reward import load_reward_model as load

    return load(path, precision=precision, source=source)


def recipe_processor(cfg, registry):
    """The processor (tokenizer + image processor) of a vision-language recipe; None for a text recipe.
    One that cannot be loaded is a ConfigError naming it, as for tokenizers."""
    from xtune.errors import ConfigError

    if not is_vlm(model_adapter(cfg, registry)):
        return None
    try:
        return vlm_processor(cfg, registry)
    except ConfigError:
        raise
    except Exception as exc:
        vision = (cfg.get("vlm") or {}).get("vision_model")
        raise _load_error("processor of", vision or cfg["tokenizer"].get("pretrained_model_name_or_path"),
                          exc) from None


def _load_error(what: str, name, exc: Exception):
    from xtune.errors import ConfigError

    return ConfigError(f"could not load the {what} {name!r}: {type(exc).__name__}: {_first_line(exc)}",
                       hint="pass --cfg-options pretrained_model_name_or_path=LOCAL_FOLDER")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def has_tokenizer(folder: str | Path | None) -> bool:
    return folder is not None and any((Path(folder) / name).is_file() for name in TOKENIZER_FILES)


def _inference_dtype(dtype: str):
    """'auto' -> the machine's precision (xtune.hardware); 'checkpoint' -> as stored; else the named dtype."""
    from xtune.hardware import choose_precision, torch_dtype

    if dtype == "checkpoint":
        return "auto"  # transformers' word for "as stored"
    return torch_dtype(choose_precision(dtype).name)


def load_for_inference(name_or_path: str, *, registry, adapter: str | None = None, bits: int | None = None,
                       dtype: str = "auto", source: str = "auto", label: str = "model"):
    """(model, tokenizer) ready for `generate`, on CUDA when there is one, optionally 4/8-bit and with a
    PEFT adapter on top. A vision-language model comes with its processor in the tokenizer's place; a
    legacy hub-code checkpoint loads as the native twin `registry`'s conversion names."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText

    if bits not in (None, 4, 8):
        raise UsageError(f"--bits {bits}: use 4 or 8 (bitsandbytes), or leave it out for full precision")
    src = resolve_source(name_or_path, source)
    from xtune.checkpoint.trust import check_weight_files

    check_weight_files(src.path)  # a crafted pickle is refused by name before transformers / peft open it
    check_weight_files(adapter)
    if bits and src.gguf_file:
        raise UsageError(
            f"--bits {bits} with a GGUF file: transformers dequantises GGUF and cannot re-quantise it",
            hint=f"convert it first (xtune convert gguf_to_hf {name_or_path} DIR) and chat with DIR")
    gguf = {"gguf_file": src.gguf_file} if src.gguf_file else {}
    cuda = torch.cuda.is_available()
    kwargs: dict = dict(dtype=_inference_dtype(dtype), **gguf)
    if bits:
        compute = "float32" if kwargs["dtype"] == "auto" else str(kwargs["dtype"]).removeprefix("torch.")
        kwargs["quantization_config"] = quantization_config(None, bits, compute_dtype=compute)
        if cuda:
            kwargs["device_map"] = {"": 0}
    from xtune.models.adapters import check_adapter_base, refuse_reward_model
    from xtune.models.legacy import find_legacy, load_native

    legacy = None if gguf else find_legacy(src.path, registry=registry)
    config = legacy.native_config() if legacy else _config(src.path, gguf)
    refuse_reward_model(config, adapter, name_or_path)
    check_adapter_base(adapter, name_or_path, config, legacy)
    vision = getattr(config, "vision_config", None) is not None
    try:
        if legacy:
            model = load_native(legacy, AutoModelForCausalLM, **kwargs)
        else:
            model = (AutoModelForImageTextToText if vision else AutoModelForCausalLM).from_pretrained(
                src.path, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        raise UsageError(f"cannot load model {name_or_path!r}: {_first_line(exc)}") from None
    if cuda and not bits:
        model = model.to("cuda")
    disable_bnb_cpu_repacking(model)  # training turned it off on the same layers: same arithmetic
    tokenizer = _inference_tokenizer(src.path, adapter, gguf, vision, registry)
    if adapter:
        from xtune.models.adapters import apply_adapter

        model = apply_adapter(model, adapter, base_name=f"{label} {name_or_path!r}")
    model.eval()
    model.config.use_cache = True
    text = getattr(tokenizer, "tokenizer", tokenizer)  # a processor's tokenizer
    if text.pad_token is None:
        text.pad_token = text.eos_token
    text.padding_side = "left"
    return model, tokenizer


def _config(path: str, gguf: dict):
    from transformers import AutoConfig

    from xtune.models.legacy import read_raw_config, refuse_unknown_remote_code

    if not gguf:
        refuse_unknown_remote_code(path, read_raw_config(path))
    try:
        return AutoConfig.from_pretrained(path, **gguf)
    except (OSError, ValueError):
        return None  # the loading below reports it


def _inference_tokenizer(path: str, adapter, gguf: dict, vision: bool, registry):
    """The tokenizer (a processor for a vision-language model), from the adapter folder when it has one."""
    from transformers import AutoTokenizer

    from xtune.models.legacy import legacy_tokenizer
    from xtune.models.processors import load_processor

    where, kwargs = (str(adapter), {}) if has_tokenizer(adapter) else (path, gguf)
    derived = None if vision or kwargs else legacy_tokenizer(where, registry=registry)
    if derived is not None:
        return derived
    if not kwargs and Path(where).is_dir() and not has_tokenizer(where):
        raise UsageError(f"model folder {where!r} has no tokenizer files ({', '.join(TOKENIZER_FILES[:-1])} "
                         f"or {TOKENIZER_FILES[-1]})",
                         hint="copy them into it from the model it was made from (xtune convert saves them "
                              "beside the weights)")
    try:
        return load_processor(where) if vision else AutoTokenizer.from_pretrained(where, **kwargs)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the tokenizer of {where!r}: {_first_line(exc)}") from None
