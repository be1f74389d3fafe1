"""`xtune convert merge BASE ADAPTER OUT`: a standalone model with the adapter folded into its weights.

peft's `merge_and_unload` adds the adapter's update to the base weights. That is only exact on a base
held in full or half precision: folded into a 4-bit base the update would be rounded away (or the
merge refused), so a quantised base is rejected up front instead of producing a subtly different model.
The result loads with plain transformers and gives the logits of base + adapter.
"""

from __future__ import annotations

import logging
from pathlib import Path

from xtune.errors import UsageError
from xtune.export.model_card import read_info, write_card, write_info
from xtune.export.tokenizer import save_tokenizer
from xtune.fileio import atomic_output_dir, check_output
from xtune.models.adapters import check_adapter_dir

log = logging.getLogger("xtune")


def _refuse_quantized(config, base: str) -> None:
    quant = getattr(config, "quantization_config", None)
    if quant is None:
        return
    quant = quant if isinstance(quant, dict) else quant.to_dict()
    method = quant.get("quant_method", "")
    if method == "gguf":
        raise UsageError(f"base model {base!r} is a GGUF file, which transformers cannot save after a merge",
                         hint=f"convert it first: xtune convert gguf_to_hf {base} BASE_DIR, then merge into "
                              "BASE_DIR")
    raise UsageError(
        f"base model {base!r} is stored quantised ({method or 'quantization_config'}): merging into "
                     "it would round the adapter away",
                     hint="merge into the full- or half-precision base model")


def check_base(base: str, source: str = "auto", *, registry):
    """Refuse, before any weight is read, a base that cannot be merged into or exported from (a legacy
    layout is judged by `registry`'s checkpoint conversions)."""
    from transformers import AutoConfig

    from xtune.models.legacy import find_legacy
    from xtune.models.sources import resolve_source

    src = resolve_source(base, source)
    gguf = {"gguf_file": src.gguf_file} if src.gguf_file else {}
    legacy = None if gguf else find_legacy(src.path, registry=registry)
    if legacy is not None:
        return legacy.native_config()
    try:
        config = AutoConfig.from_pretrained(src.path, **gguf)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load base model {base!r}: {str(exc).splitlines()[0]}") from None
    _refuse_quantized(config, base)
    return config


def load_merged(base: str, adapter: str | Path, *, registry, dtype: str = "auto", source: str = "auto"):
    """(merged model, tokenizer, info): `adapter` folded into `base` loaded in `dtype` ('auto': its own),
    with the adapter's tokenizer when it has one, and what the adapter's xtune_info.json says of the run."""
    from xtune.models.build import load_for_inference

    adapter_dir = check_adapter_dir(adapter)
    check_base(base, source, registry=registry)
    peft_model, tokenizer = load_for_inference(base, registry=registry, adapter=str(adapter_dir),
                                               source=source, label="base model",
                                               dtype="checkpoint" if dtype == "auto" else dtype)
    merged = peft_model.merge_and_unload()
    info = read_info(adapter_dir) or {"base_model": base, "method": "adapter"}
    return merged, tokenizer, dict(info, base_model=base, kind="full model", merged_adapter=str(adapter_dir))


def _legacy_base(base: str, source: str, registry):
    """The legacy layout of `base` that `--format original` writes back, or a UsageError."""
    from xtune.models.legacy import find_legacy
    from xtune.models.sources import resolve_source

    src = resolve_source(base, source)
    legacy = None if src.gguf_file else find_legacy(src.path, registry=registry)
    if legacy is None:
        raise UsageError(f"--format original: base model {base!r} is already in a native transformers "
                         "layout", hint="leave --format out (native is the only layout it has)")
    return legacy


def merge(base: str, adapter: str, out: str, *, registry, dtype: str = "auto", max_shard_size: str = "5GB",
          force: bool = False, prompt_template: str | None = None, source: str = "auto",
          layout: str = "native") -> Path:
    """Merge `adapter` into `base` and save `out`; returns `out`. dtype 'auto' keeps the base's own.
    `layout='original'` writes a legacy hub-code base's own layout back (`xtune.export.original_layout`)."""
    if dtype in ("4bit", "int4", "nf4", "8bit", "int8"):
        raise UsageError(f"--dtype {dtype}: merging needs a full- or half-precision base",
                         hint="use float32, bfloat16 or float16")
    from xtune.models.vlm import image_prompt_of

    out_path = check_output(out, force, inputs=(base, adapter))
    adapter_dir = check_adapter_dir(adapter)
    legacy = _legacy_base(base, source, registry) if layout == "original" else None
    if prompt_template:
        from xtune.templates import get_template

        get_template(prompt_template, registry)  # an unknown name fails before the model is loaded
    merged, tokenizer, info = load_merged(base, adapter_dir, registry=registry, dtype=dtype, source=source)
    if prompt_template:
        info["prompt_template"] = prompt_template
    with atomic_output_dir(out_path, force=force, inputs=(base, adapter)) as tmp:
        if legacy is not None:
            from xtune.export.original_layout import write_original
            from xtune.templates.export import attach_chat_template

            attach_chat_template(tokenizer, prompt_template, registry=registry)
            write_original(merged, tmp, legacy, max_shard_size=max_shard_size,
                           chat_template=tokenizer.chat_template)
            info["layout"] = f"original ({legacy.source_type})"
        else:
            merged.save_pretrained(str(tmp), max_shard_size=max_shard_size)
            save_tokenizer(tokenizer, tmp, prompt_template, registry=registry,
                           image_prompt=image_prompt_of(merged, registry))
        write_info(tmp, info)
        write_card(tmp, info, merged_from=str(adapter_dir))
    log.info("merged %s into %s -> %s", adapter_dir, base, out_path)
    return out_path
