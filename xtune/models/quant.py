"""Quantised bases for QLoRA and `--bits 4|8` chat: the bitsandbytes config, and its CPU fix.

One place decides how a base is quantised: the recipe's `quantization` section when it has one, else the
tuning method's registered settings (QLoRA: 4-bit NF4 with double quantisation), else the `--bits` of
chat. The compute dtype 'auto' follows the run's precision (`xtune.hardware`).
"""

from __future__ import annotations

import logging

log = logging.getLogger("xtune")


def quantization_config(quant: dict | None, load_in_bits: int | None = None, *, method=None,
                        compute_dtype: str = "float32"):
    """A BitsAndBytesConfig, or None for a full-precision base.

    `quant` is the recipe's section; without one, `method.quantization` (its registered defaults) or plain
    NF4 / 8-bit settings for `load_in_bits` apply.
    """
    if not quant and not load_in_bits:
        return None
    from transformers import BitsAndBytesConfig

    from xtune.hardware import dtype_name, torch_dtype

    quant = dict(quant or (method.quantization if method is not None else ()) or {})
    if not quant:
        quant = (dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
                 if load_in_bits == 4 else dict(load_in_8bit=True))
    if quant.get("load_in_4bit"):
        wanted = quant.get("bnb_4bit_compute_dtype", "auto")
        quant["bnb_4bit_compute_dtype"] = torch_dtype(compute_dtype if dtype_name(wanted) == "auto"
                                                      else wanted)
    return BitsAndBytesConfig(**quant)


def disable_bnb_cpu_repacking(model) -> int:
    """Turn off bitsandbytes' AVX512-BF16 CPU fast path on every `Linear4bit`; returns layers changed.

    On such CPUs any eval / no-grad forward of a 4-bit layer repacks its weights irreversibly, after which
    QLoRA gets zero or wrong gradients (Llama) or crashes (Qwen2); it also asserts on layer sizes that are
    not multiples of its block. docs/compatibility.md records the bitsandbytes versions this applies to.
    """
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            count += 1
    if count:
        log.info("bitsandbytes: CPU bf16 repacking off on %d Linear4bit layers (it corrupts QLoRA gradients)",
                 count)
    return count
