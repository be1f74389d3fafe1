"""Loading a model to chat with: a folder, a hub id, `modelscope://ID` or a GGUF file, optionally in
4/8-bit (bitsandbytes, CPU or CUDA) and with a PEFT adapter on top.

Training's loader (`xtune.models.loading`) resolves the source and builds the quantisation config; what
differs for chat is the goal: inference with the KV cache on, left padding, and the tokenizer taken
from the adapter folder when it has one, because that copy carries the fine-tune's chat template.
"""

from __future__ import annotations

import logging
from pathlib import Path

from xtune.errors import UsageError

log = logging.getLogger("xtune")

_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def load_chat_model(name_or_path: str, *, adapter: str | None = None, bits: int | None = None,
                    dtype: str = "auto", source: str = "auto"):
    """(model, tokenizer) ready for `generate`, on CUDA when there is one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xtune.models.loading import (
        disable_bnb_cpu_repacking,
        quantization_config,
        resolve_dtype,
        resolve_source,
    )

    if bits not in (None, 4, 8):
        raise UsageError(f"--bits {bits}: use 4 or 8 (bitsandbytes), or leave it out for full precision")
    src = resolve_source(name_or_path, source)
    if bits and src.gguf_file:
        raise UsageError(f"--bits {bits} with a GGUF file: transformers dequantises GGUF and cannot re-quantise it",
                         hint=f"convert it first (xtune convert gguf_to_hf {name_or_path} DIR) and chat with DIR")
    gguf = {"gguf_file": src.gguf_file} if src.gguf_file else {}
    cuda = torch.cuda.is_available()
    kwargs = dict(dtype=resolve_dtype(dtype), **gguf)
    if bits:
        kwargs["quantization_config"] = quantization_config(None, bits)
        if bits == 4:
            kwargs["quantization_config"].bnb_4bit_compute_dtype = kwargs["dtype"]
        if cuda:
            kwargs["device_map"] = {"": 0}
    try:
        model = AutoModelForCausalLM.from_pretrained(src.path, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        raise UsageError(f"cannot load model {name_or_path!r}: {_first_line(exc)}") from None
    if cuda and not bits:
        model = model.to("cuda")
    # bitsandbytes' AVX512-BF16 CPU fast path repacks 4-bit weights in place and asserts on layer sizes
    # that are not multiples of its block (tiny models); training turns it off for the same layers, and
    # chat does too so that both see the same arithmetic.
    disable_bnb_cpu_repacking(model)
    tokenizer_dir, tokenizer_kwargs = src.path, gguf
    if adapter and any((Path(adapter) / f).is_file() for f in _TOKENIZER_FILES):
        tokenizer_dir, tokenizer_kwargs = str(adapter), {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, **tokenizer_kwargs)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the tokenizer of {tokenizer_dir!r}: {_first_line(exc)}") from None
    if adapter:
        from xtune.export.adapters import apply_adapter

        model = apply_adapter(model, adapter, base_name=f"model {name_or_path!r}")
    model.eval()
    model.config.use_cache = True
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def default_template_name(model, name_or_path: str) -> str | None:
    """The model adapter's default template for this model (by `config.model_type`); where several families
    share a model_type (llama), the one whose name appears in the model's name wins."""
    from xtune.plugins import get_registry

    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    if model_type is None:
        return None
    candidates = [a for a in get_registry().model_adapters if model_type in a.model_types]
    if not candidates:
        return None
    label = (str(name_or_path) + " " + str(getattr(config, "_name_or_path", ""))).lower()
    label = label.replace("-", "").replace("_", "").replace(".", "")
    named = [a for a in candidates if a.name.lower().replace("_", "") in label]
    best = max(named, key=lambda a: len(a.name)) if named else candidates[0]
    return best.default_template
