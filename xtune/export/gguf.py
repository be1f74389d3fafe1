"""A GGUF file turned into a plain Hugging Face folder (config, safetensors, tokenizer, chat template).

transformers can read a GGUF file (with the `gguf` package) and dequantises it to full precision, but a
model loaded that way keeps a GGUF `quantization_config` and cannot be `save_pretrained`. So the weights
are copied into a fresh model built from the same config without that entry, which saves normally and
then reloads in about a second instead of the 25 s a GGUF load takes (measured on SmolLM2-135M).
"""

from __future__ import annotations

import logging
from pathlib import Path

from xtune.errors import UsageError
from xtune.fileio import atomic_output_dir, check_output

log = logging.getLogger("xtune")


def gguf_to_hf(gguf_path: str | Path, out: str | Path, *, registry, dtype: str = "bfloat16",
               force: bool = False, max_shard_size: str = "2GB") -> Path:
    """Convert `gguf_path` into the folder `out`; returns `out`. `dtype` is the saved weights' precision.
    (`registry` goes to the model builder; a GGUF file never needs a legacy conversion.)"""
    from transformers import AutoModelForCausalLM

    from xtune.hardware import torch_dtype
    from xtune.models.build import load_for_inference

    gguf_path = Path(gguf_path).expanduser()
    if not gguf_path.is_file() or gguf_path.suffix != ".gguf":
        raise UsageError(f"GGUF file {str(gguf_path)!r} does not exist or is not a .gguf file")
    out = check_output(out, force, inputs=(gguf_path,))
    target_dtype = torch_dtype(dtype)
    try:
        loaded, tokenizer = load_for_inference(str(gguf_path), registry=registry, dtype="float32")
    except KeyError as exc:
        raise UsageError(f"cannot read GGUF file {str(gguf_path)!r}: {exc}") from None
    config = loaded.config
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attr):
            delattr(config, attr)
    config.dtype = target_dtype
    plain = AutoModelForCausalLM.from_config(config, dtype=target_dtype)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # Tied output embeddings appear as "missing" on models that tie them; anything else is a real gap.
    tied = set(getattr(plain, "_tied_weights_keys", None) or ())
    missing = [k for k in missing if k not in tied and not (config.tie_word_embeddings and "lm_head" in k)]
    if missing or unexpected:
        raise UsageError(
            f"GGUF {gguf_path.name}: weights do not fit the config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    plain.generation_config = loaded.generation_config
    del loaded
    tokenizer.padding_side = "right"  # as the GGUF's tokenizer came; chat sets left padding itself
    with atomic_output_dir(out, force=force) as tmp:
        plain.save_pretrained(tmp, max_shard_size=max_shard_size)
        tokenizer.save_pretrained(tmp)
    log.info("converted %s -> %s", gguf_path, out)
    return out
