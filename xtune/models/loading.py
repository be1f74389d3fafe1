"""Loading a tokenizer and a model for training from a hub id, a ModelScope id, a folder or a GGUF file.

The recipe's `model` section says what to load; this module turns its 'auto' values into concrete
choices for the machine at hand (dtype, attention kernel, 4-bit compute dtype) and applies the
bitsandbytes CPU fix right after loading. Every loaded model trains with `use_cache=False`: with the
cache on, sdpa/eager attention leaks across packed documents (ENVIRONMENT.md, "Attention and packing").
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from xtune.errors import ConfigError

log = logging.getLogger("xtune")


@dataclass(frozen=True)
class ModelSource:
    """Where to load from: a folder or hub id for `from_pretrained`, plus a GGUF file name inside it."""

    path: str
    gguf_file: str | None = None


def resolve_source(name_or_path: str, source: str = "auto") -> ModelSource:
    """A local GGUF file, a local folder, a ModelScope id (`modelscope://org/name` or source='modelscope',
    downloaded with ModelScope's client into its cache) or a Hugging Face hub id, in that order."""
    name = str(name_or_path)
    if name.startswith("modelscope://"):
        name, source = name[len("modelscope://"):], "modelscope"
    local = Path(name).expanduser()
    if local.is_file() and local.suffix == ".gguf":
        return ModelSource(str(local.parent), local.name)
    if local.is_dir():
        return ModelSource(str(local))
    if source == "local" or name.endswith(".gguf") or name.startswith((".", "/", "~")):
        raise ConfigError(f"model path {name!r} does not exist")
    if source == "modelscope":
        from modelscope import snapshot_download

        return ModelSource(snapshot_download(name))
    return ModelSource(name)


def flash_attn_available() -> bool:
    import importlib.util

    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


def resolve_attn_implementation(requested: str | None, adapter=None) -> str:
    """'auto' -> flash_attention_2 on CUDA when flash-attn imports and the family supports it, else sdpa."""
    if requested in (None, "auto"):
        if flash_attn_available() and (adapter is None or adapter.supports_flash_attn):
            return "flash_attention_2"
        return "sdpa"
    if requested == "flash_attention_2" and not flash_attn_available():
        raise ConfigError("model.attn_implementation='flash_attention_2' needs CUDA and the flash-attn package",
                          hint="use 'auto' or 'sdpa'")
    return requested


def resolve_dtype(requested, *, for_compute: bool = False):
    """'auto' -> bf16 on a CUDA GPU that has it, fp16 on an older GPU, fp32 on CPU (where bf16 autocast
    does the mixed precision and the weights stay fp32 so the optimizer updates full-precision values)."""
    import torch

    if requested in (None, "auto"):
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(requested, torch.dtype):
        return requested
    aliases = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
    name = aliases.get(str(requested), str(requested))
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ConfigError(f"unknown dtype {requested!r}", hint="use auto, bfloat16, float16 or float32")
    return dtype


def load_tokenizer(tokenizer_cfg: dict, adapter=None, source: str = "auto"):
    """The tokenizer, with a pad token (the adapter's choice, else EOS) so batches can be padded."""
    from transformers import AutoTokenizer

    cfg = dict(tokenizer_cfg)
    src = resolve_source(cfg.pop("pretrained_model_name_or_path"), source)
    kwargs = {k: v for k, v in cfg.items() if v is not None}
    if src.gguf_file:
        kwargs["gguf_file"] = src.gguf_file
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


def quantization_config(quant: dict | None, load_in_bits: int | None):
    """A BitsAndBytesConfig from the recipe's `quantization` section (or NF4 defaults when the tuning
    method needs a quantised base and the recipe gave none); None for a full-precision base."""
    if not quant and not load_in_bits:
        return None
    from transformers import BitsAndBytesConfig

    quant = dict(quant or {})
    if not quant:
        quant = (dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)
                 if load_in_bits == 4 else dict(load_in_8bit=True))
    if "bnb_4bit_compute_dtype" in quant:
        quant["bnb_4bit_compute_dtype"] = resolve_dtype(quant["bnb_4bit_compute_dtype"])
    return BitsAndBytesConfig(**quant)


def disable_bnb_cpu_repacking(model) -> int:
    """The bitsandbytes CPU fix: on AVX512-BF16 CPUs any eval/no-grad forward of a `Linear4bit` repacks its
    weights irreversibly, after which QLoRA gets zero/wrong gradients (Llama) or crashes (Qwen2). Turning
    the fast path off on every 4-bit layer keeps training and evaluation correct. Returns layers fixed."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return 0
    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False
            count += 1
    return count


def load_model(model_cfg: dict, *, adapter=None, load_in_bits: int | None = None, source: str = "auto"):
    """A causal LM ready for a tuning method: dtype and attention resolved, quantised if asked,
    `use_cache=False`, gradient checkpointing as the recipe says."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = dict(model_cfg)
    src = resolve_source(cfg.pop("pretrained_model_name_or_path"), source)
    cfg.pop("adapter", None)
    cfg.pop("use_varlen_attn", None)  # read by the data pipeline; attention needs no switch for it
    gradient_checkpointing = cfg.pop("gradient_checkpointing", False)
    quant = quantization_config(cfg.pop("quantization", None), load_in_bits)
    kwargs = dict(
        dtype=resolve_dtype(cfg.pop("torch_dtype", "auto")),
        attn_implementation=resolve_attn_implementation(cfg.pop("attn_implementation", "auto"), adapter),
        trust_remote_code=bool(cfg.pop("trust_remote_code", False)),
    )
    kwargs.update({k: v for k, v in cfg.items() if v is not None})
    if src.gguf_file:
        kwargs["gguf_file"] = src.gguf_file
    if quant is not None:
        kwargs["quantization_config"] = quant
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))}
    model = AutoModelForCausalLM.from_pretrained(src.path, **kwargs)
    fixed = disable_bnb_cpu_repacking(model)
    if fixed:
        log.info("bitsandbytes CPU fix applied to %d Linear4bit layers", fixed)
    model.config.use_cache = False
    if gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.2x
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model


def uses_checkpointing(model) -> bool:
    """Whether activation (gradient) checkpointing is on; transformers 5 renamed the property."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name) or hasattr(model, name):
            return bool(getattr(model, name))
    return False


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit packed weights count at their unpacked size."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if getattr(p, "quant_state", None) is not None or p.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored byte
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
