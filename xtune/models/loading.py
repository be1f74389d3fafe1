"""Loading a tokenizer and a causal LM from a recipe's `tokenizer` / `model` sections.

The sections say what to load; this module turns their 'auto' values into concrete choices for the
machine at hand (dtype, attention kernel, 4-bit compute dtype) and applies the bitsandbytes CPU fix right
after loading. Every model loaded for training has `use_cache=False`: with the cache on, sdpa/eager
attention leaks across packed documents (docs/compatibility.md).
"""

from __future__ import annotations

import logging
import os

from xtune.errors import ConfigError
from xtune.hardware import dtype_name, torch_dtype
from xtune.models.quant import disable_bnb_cpu_repacking, quantization_config
from xtune.models.sources import resolve_source

log = logging.getLogger("xtune")


def flash_attn_available() -> bool:
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def resolve_attn_implementation(requested: str | None, adapter=None) -> str | None:
    """'auto' -> flash_attention_2 on CUDA when flash-attn imports and the family supports it (packed rows
    then run as varlen attention over their position_ids), else None: transformers' own default, sdpa
    where the architecture has it and eager where it does not (Gemma-2's soft-capped attention)."""
    if requested in (None, "auto"):
        if flash_attn_available() and (adapter is None
                                       or (adapter.supports_flash_attn and adapter.supports_varlen)):
            return "flash_attention_2"
        return None
    if requested == "flash_attention_2" and not flash_attn_available():
        raise ConfigError(
            "model.attn_implementation='flash_attention_2' needs CUDA and the flash-attn package",
                          hint="use 'auto' or 'sdpa'")
    return requested


def weights_dtype(requested, precision: str):
    """The dtype the weights are loaded in: 'auto' -> the run's precision on CUDA; fp32 on CPU, where
    bf16 autocast does the mixed precision and the optimizer keeps updating full-precision values."""
    import torch

    name = dtype_name(requested)
    if name != "auto":
        return torch_dtype(name)
    return torch_dtype(precision) if torch.cuda.is_available() else torch.float32


def load_tokenizer(tokenizer_cfg: dict, adapter=None, source: str = "auto", *, registry):
    """The tokenizer, with a pad token (the adapter's choice, else EOS) so batches can be padded; a legacy
    family's folder gets the tokenizer `registry`'s conversion builds from its SentencePiece model."""
    from transformers import AutoTokenizer

    cfg = dict(tokenizer_cfg)
    src = resolve_source(cfg.pop("pretrained_model_name_or_path", ""), source)
    kwargs = {k: v for k, v in cfg.items() if v is not None}
    tokenizer = None
    if src.gguf_file:
        kwargs["gguf_file"] = src.gguf_file
    else:
        from xtune.models.legacy import legacy_tokenizer

        tokenizer = legacy_tokenizer(src.path, registry=registry,
                                     trust_remote_code=bool(kwargs.get("trust_remote_code")))
        if tokenizer is not None and kwargs.get("padding_side"):
            tokenizer.padding_side = kwargs["padding_side"]
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(src.path, **kwargs)
    if tokenizer.pad_token is None:
        wanted = adapter.pad_token if adapter is not None and adapter.pad_token else None
        if wanted and wanted in tokenizer.get_vocab():
            tokenizer.pad_token = wanted
        elif tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif tokenizer.unk_token is not None:
            tokenizer.pad_token = tokenizer.unk_token
    return tokenizer


def load_model(model_cfg: dict, *, registry, adapter=None, load_in_bits: int | None = None,
               source: str = "auto", method=None, precision: str = "float32", auto_class=None,
               unquantized: tuple[str, ...] = (), head: str = "causal_lm"):
    """A causal LM ready for a tuning method: dtype and attention resolved, quantised when the recipe or
    the method asks, `use_cache=False`, gradient checkpointing as the recipe says.

    `auto_class` loads another kind of model (a vision-language one); `unquantized` names modules that
    stay in full precision when the rest is quantised (its vision tower and projector). With
    `head='score'` the same checkpoint is loaded as a reward model, `AutoModelForSequenceClassification`
    with one label (the scalar head is new, the rest is the checkpoint's). A legacy hub-code checkpoint
    loads as the native twin its `registry` conversion names.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cfg = dict(model_cfg)
    src = resolve_source(cfg.pop("pretrained_model_name_or_path", ""), source)
    cfg.pop("adapter", None)
    cfg.pop("use_varlen_attn", None)  # recipes copied from older xtune: packed rows need no switch now
    gradient_checkpointing = cfg.pop("gradient_checkpointing", False)
    quant = quantization_config(cfg.pop("quantization", None), load_in_bits, method=method,
                                compute_dtype=precision)
    kwargs = dict(
        dtype=weights_dtype(cfg.pop("torch_dtype", "auto"), precision),
        trust_remote_code=bool(cfg.pop("trust_remote_code", False)),
    )
    attention = resolve_attn_implementation(cfg.pop("attn_implementation", "auto"), adapter)
    if attention is not None:
        kwargs["attn_implementation"] = attention
    kwargs.update({k: v for k, v in cfg.items() if v is not None})
    if src.gguf_file:
        kwargs["gguf_file"] = src.gguf_file
    if quant is not None:
        if unquantized:
            quant.llm_int8_skip_modules = [*(quant.llm_int8_skip_modules or ()), *unquantized]
        kwargs["quantization_config"] = quant
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
    if head == "score":
        kwargs["num_labels"] = 1
    model_class = AutoModelForSequenceClassification if head == "score" else (auto_class or
                                                                              AutoModelForCausalLM)
    model = _from_pretrained(model_class, src, kwargs, registry)
    disable_bnb_cpu_repacking(model)
    model.config.use_cache = False
    if gradient_checkpointing:
        enable_checkpointing(model)
    return model


def _from_pretrained(model_class, src, kwargs: dict, registry):
    """`model_class.from_pretrained`, or, for a legacy hub-code checkpoint, its native twin
    (`xtune.models.legacy`) unless the recipe asks for the hub's code."""
    from xtune.models.legacy import find_legacy, load_native, read_raw_config, refuse_unknown_remote_code

    if src.gguf_file:
        return model_class.from_pretrained(src.path, **kwargs)
    trust = bool(kwargs.get("trust_remote_code"))
    raw = read_raw_config(src.path)
    legacy = find_legacy(src.path, raw, registry=registry, trust_remote_code=trust)
    if legacy is None:
        if not trust:
            refuse_unknown_remote_code(src.path, raw)
        return model_class.from_pretrained(src.path, **kwargs)
    kwargs = {k: v for k, v in kwargs.items() if k != "trust_remote_code"}
    return load_native(legacy, model_class, **kwargs)


def enable_checkpointing(model) -> None:
    """Activation (gradient) checkpointing, non-reentrant."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
