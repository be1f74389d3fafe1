"""Which type each tensor gets in a k-quant GGUF file: the mixes `llama-quantize` makes (Q4_K_M and kin).

A file called Q4_K_M is not all Q4_K. llama.cpp's `llama_tensor_get_type` (src/llama-quant.cpp) gives the
tensors that suffer most from few bits more of them, and these are the rules xtune follows, so that a
file named like llama.cpp's has llama.cpp's content:

    output.weight (or the token embedding when it serves as the output)   Q6_K; Q8_0 when its rows are not
                                                                           a multiple of 256
    attn_v   Q4_K_M / Q5_K_M: Q6_K on the layers `use_more_bits` picks (the first and last eighth, and
             every third between); Q4_K_S: Q5_K on the first 4; Q3_K_M: Q5_K on the first 2, else Q4_K;
             Q2_K: Q4_K when 4+ query heads share a KV head, else Q3_K; 80-layer (70B) models: Q3_K/Q4_K
             become Q5_K
    ffn_down Q4_K_M / Q5_K_M: Q6_K on the `use_more_bits` layers; Q4_K_S: Q5_K on the first eighth;
             Q3_K_M: Q5_K on the first sixteenth, else Q4_K; Q2_K: Q3_K
    attn_output   Q2_K: Q3_K; Q3_K_M: Q4_K
    everything else with two dimensions: the mix's base type (Q2_K, Q3_K, Q4_K, Q5_K, Q6_K)

and then, as llama.cpp falls back when a row is not a whole number of 256-value super-blocks: Q2_K/Q3_K
become Q4_0, Q4_K Q5_0, Q5_K Q5_1, Q6_K Q8_0 (F16 when rows are not even a multiple of 32). Vectors stay
F32. Small models meet the fallback often: SmolLM2-135M's hidden size 576 is not a multiple of 256, so
only its ffn_down rows (1536) take k-quants, exactly as in llama.cpp's own Q4_K_M of it. The rules for
mixture-of-experts and Falcon models are not reproduced (xtune writes neither).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# outtype -> (llama.cpp's file type name in gguf.LlamaFileType, the mix's base tensor type)
KQUANT_OUTTYPES = {
    "q2_k": ("MOSTLY_Q2_K", "Q2_K"),
    "q3_k_m": ("MOSTLY_Q3_K_M", "Q3_K"),
    "q4_k_s": ("MOSTLY_Q4_K_S", "Q4_K"),
    "q4_k_m": ("MOSTLY_Q4_K_M", "Q4_K"),
    "q5_k_s": ("MOSTLY_Q5_K_S", "Q5_K"),
    "q5_k_m": ("MOSTLY_Q5_K_M", "Q5_K"),
    "q6_k": ("MOSTLY_Q6_K", "Q6_K"),
}
_FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}


@dataclass(frozen=True)
class MixModel:
    """What the rules need to know of the model."""

    n_layer: int
    n_gqa: int  # query heads per KV head
    tied: bool  # the token embedding is also the output projection


def use_more_bits(i_layer: int, n_layer: int) -> bool:
    """llama.cpp's choice of layers that get the higher type under _M mixes."""
    return i_layer < n_layer // 8 or i_layer >= 7 * n_layer // 8 or (i_layer - n_layer // 8) % 3 == 2


def _layer(name: str) -> int:
    found = re.match(r"blk\.(\d+)\.", name)
    return int(found.group(1)) if found else -1


def _chosen(name: str, outtype: str, model: MixModel) -> str:
    """The type llama.cpp's rules pick for a weight matrix, before the row-size fallback."""
    base = KQUANT_OUTTYPES[outtype][1]
    i, n = _layer(name), model.n_layer
    if "attn_v.weight" in name or "attn_qkv.weight" in name:
        picked = {"q2_k": "Q4_K" if model.n_gqa >= 4 else "Q3_K",
                  "q3_k_m": "Q5_K" if i < 2 else "Q4_K",
                  "q4_k_m": "Q6_K" if use_more_bits(i, n) else base,
                  "q5_k_m": "Q6_K" if use_more_bits(i, n) else base,
                  "q4_k_s": "Q5_K" if i < 4 else base}.get(outtype, base)
        return "Q5_K" if n == 80 and picked in ("Q3_K", "Q4_K") else picked
    if "ffn_down" in name:
        return {"q2_k": "Q3_K",
                "q3_k_m": "Q5_K" if i < n // 16 else "Q4_K",
                "q4_k_m": "Q6_K" if use_more_bits(i, n) else base,
                "q5_k_m": "Q6_K" if use_more_bits(i, n) else base,
                "q4_k_s": "Q5_K" if i < n // 8 else base}.get(outtype, base)
    if "attn_output.weight" in name:
        return {"q2_k": "Q3_K", "q3_k_m": "Q4_K"}.get(outtype, base)
    return base


def kquant_type(name: str, shape: tuple[int, ...], outtype: str, model: MixModel):
    """The gguf.GGMLQuantizationType tensor `name` (numpy `shape`, rows last) is stored in under the k-quant
    mix `outtype`."""
    from gguf import GGML_QUANT_SIZES
    from gguf import GGMLQuantizationType as Q

    if len(shape) == 1 or name == "rope_freqs.weight":
        return Q.F32
    cols = shape[-1]
    if name == "output.weight" or (model.tied and name == "token_embd.weight"):
        wanted = Q.Q8_0 if cols % 256 else Q.Q6_K  # no k-quant base type here is Q8_0, so always Q6_K
    else:
        wanted = getattr(Q, _chosen(name, outtype, model))
    if cols % GGML_QUANT_SIZES[wanted][0] and wanted.name in _FALLBACK:
        wanted = getattr(Q, _FALLBACK[wanted.name])
    return Q.F16 if cols % GGML_QUANT_SIZES[wanted][0] else wanted


def mix_model(config, tied: bool) -> MixModel:
    """The MixModel of a transformers config."""
    heads = int(getattr(config, "num_attention_heads", 1) or 1)
    kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
    return MixModel(n_layer=int(config.num_hidden_layers), n_gqa=heads // max(kv_heads, 1), tied=tied)
