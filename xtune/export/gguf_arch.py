"""What each architecture xtune writes as GGUF looks like there: llama.cpp's name for it, its settings under
llama.cpp's keys, and the few tensors whose layout differs from the Hugging Face one.

The facts come from reading llama.cpp's own converter (convert_hf_to_gguf.py) and are checked the other
way round in the tests: transformers' GGUF reader, written independently, loads our files back and must
give the source model's logits. Three layouts differ from Hugging Face's:
- llama.cpp's `llama` graph rotates interleaved pairs of a head's dimensions where HF rotates its two
  halves, so the q/k projections of that architecture are permuted (other architectures use the NeoX
  rotation, as HF does, and are written as they are);
- Gemma's RMSNorm multiplies by (1 + w); llama.cpp stores the factor itself, so norm weights get + 1;
- Llama-3.1-style RoPE scaling is a per-frequency factor table, written as the `rope_freqs` tensor.
Anything else (other RoPE scalings, other families, mixtures of experts among them) is refused by name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from xtune.errors import UsageError


@dataclass(frozen=True)
class GGUFArch:
    """One llama.cpp architecture and what converting to it involves."""

    name: str  # llama.cpp's architecture name (gguf.MODEL_ARCH_NAMES)
    permute_qk: bool = False
    norm_offset: float = 0.0
    always_tied: bool = False  # no output tensor: the graph reuses the token embedding


ARCHITECTURES: dict[str, GGUFArch] = {
    "llama": GGUFArch("llama", permute_qk=True),  # Llama 2/3, SmolLM2, Yi, Vicuna, DeepSeek-LLM/-Coder
    "mistral": GGUFArch("llama", permute_qk=True),  # llama.cpp runs Mistral and Zephyr as llama
    "qwen2": GGUFArch("qwen2"),  # Qwen1.5, Qwen2, Qwen2.5
    "qwen3": GGUFArch("qwen3"),
    "gemma": GGUFArch("gemma", norm_offset=1.0, always_tied=True),
    "gemma2": GGUFArch("gemma2", norm_offset=1.0, always_tied=True),
    "phi3": GGUFArch("phi3"),
}
_ROPE_TYPES = ("default", "linear", "llama3")


def gguf_arch(config) -> GGUFArch:
    """The GGUF architecture for an HF config, or a UsageError naming what cannot be written."""
    model_type = getattr(config, "model_type", "?")
    names = ", ".join(getattr(config, "architectures", None) or [model_type])
    arch = ARCHITECTURES.get(model_type)
    if arch is None:
        raise UsageError(f"architecture {model_type!r} ({names}) cannot be written as GGUF by xtune",
                         hint=f"supported: {', '.join(sorted(ARCHITECTURES))}; for others use llama.cpp's "
                              "convert_hf_to_gguf.py")
    rope_type = rope_parameters(config).get("rope_type") or "default"
    if rope_type not in _ROPE_TYPES:
        raise UsageError(f"{names}: RoPE scaling {rope_type!r} cannot be written as GGUF by xtune",
                         hint=f"supported: {', '.join(_ROPE_TYPES)}")
    scalar = getattr(config, "query_pre_attn_scalar", None)
    if model_type == "gemma2" and scalar not in (None, head_dim(config)):
        raise UsageError(f"{names}: query_pre_attn_scalar={scalar} differs from head_dim={head_dim(config)}, "
                         "which llama.cpp's gemma2 graph assumes")
    return arch


def rope_parameters(config) -> dict:
    """RoPE settings whichever way the config spells them (transformers 5 `rope_parameters`, or the
    older `rope_theta` + `rope_scaling`)."""
    params = dict(getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {})
    params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    return params


def head_dim(config) -> int:
    return int(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def write_hparams(writer, config, arch: GGUFArch) -> None:
    """The model's shape and settings under llama.cpp's keys for `arch`."""
    heads = int(config.num_attention_heads)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    dim = head_dim(config)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_key_length(dim)
    writer.add_value_length(dim)
    rope = rope_parameters(config)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_rope_dimension_count(int(dim * float(rope.get("partial_rotary_factor", 1.0))))
    writer.add_vocab_size(int(config.vocab_size))
    if rope.get("rope_type") == "linear":
        import gguf

        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    if arch.name == "gemma2":
        if getattr(config, "attn_logit_softcapping", None) is not None:
            writer.add_attn_logit_softcapping(float(config.attn_logit_softcapping))
        if getattr(config, "final_logit_softcapping", None) is not None:
            writer.add_final_logit_softcapping(float(config.final_logit_softcapping))
    if arch.name in ("gemma2", "phi3") and getattr(config, "sliding_window", None):
        writer.add_sliding_window(int(config.sliding_window))


def convert_tensor(gguf_name: str, data: np.ndarray, config, arch: GGUFArch) -> np.ndarray:
    """An HF tensor (float32) in the layout llama.cpp's graph for `arch` expects."""
    if arch.permute_qk and gguf_name.endswith(("attn_q.weight", "attn_k.weight", "attn_q.bias",
                                                "attn_k.bias")):
        heads = int(config.num_attention_heads)
        if ".attn_k." in gguf_name:
            heads = int(getattr(config, "num_key_value_heads", None) or heads)
        return _interleave_rotary_halves(data, heads)
    if arch.norm_offset and gguf_name.endswith("norm.weight"):
        return data + np.float32(arch.norm_offset)
    return data


def _interleave_rotary_halves(weight: np.ndarray, heads: int) -> np.ndarray:
    """Rows of each head go from HF's [first half, second half] order to llama.cpp's interleaved pairs."""
    rows = weight.shape[0]
    return (weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def extra_tensors(config) -> dict[str, np.ndarray]:
    """Tensors llama.cpp needs that the HF state dict does not hold (Llama-3.1 RoPE factors)."""
    rope = rope_parameters(config)
    if rope.get("rope_type") != "llama3":
        return {}
    return {"rope_freqs.weight": llama3_rope_factors(rope, head_dim(config))}


def llama3_rope_factors(rope: dict, dim: int) -> np.ndarray:
    """The divisor of each rotary frequency under Llama-3.1 scaling: 1 for short wavelengths, `factor`
    for long ones, a smooth blend between (the rule of Meta's reference code and transformers)."""
    factor, low, high = float(rope["factor"]), float(rope["low_freq_factor"]), float(rope["high_freq_factor"])
    old_context = float(rope["original_max_position_embeddings"])
    inv_freq = 1.0 / (float(rope["rope_theta"]) ** (np.arange(0, dim, 2, dtype=np.float64) / dim))
    factors = []
    for freq in inv_freq:
        wavelen = 2 * math.pi / freq
        if wavelen < old_context / high:
            factors.append(1.0)
        elif wavelen > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)
