"""Native config fields for the legacy hub-code families, from their raw config.json.

Each function reads the dict the hub's config.json holds (written for the family's own modelling code)
and returns the fields of the transformers architecture that holds the same weights. What the hub code
does rather than what its config says decides the values: InternLM v1's code always rotates with base
10000 whatever `rope_theta` says, ChatGLM's rotary base is 10000 × `rope_ratio` over half of each head.
A setting the native architecture cannot reproduce is a ConfigError naming it, never a silent change.
"""

from __future__ import annotations

from xtune.errors import ConfigError

# Fields that mean the same in the legacy Llama-like configs and in LlamaConfig.
_SAME = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
         "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps", "bos_token_id",
         "eos_token_id", "pad_token_id", "tie_word_embeddings")


def _common(raw: dict, fields=_SAME) -> dict:
    out = {k: raw[k] for k in fields if k in raw}
    if raw.get("torch_dtype"):
        out["dtype"] = raw["torch_dtype"]
    return out


def _rope(theta: float, scaling: dict | None, what: str) -> dict:
    params = {"rope_type": "default", "rope_theta": float(theta)}
    if scaling:
        kind = scaling.get("type") or scaling.get("rope_type")
        if kind not in ("linear", "dynamic"):
            raise ConfigError(f"{what}: rope scaling {kind!r} has no equivalent in the native architecture",
                              hint="pass --cfg-options trust_remote_code=True to run the hub's own code")
        params.update(rope_type=kind, factor=float(scaling.get("factor", scaling.get("scaling_factor", 1.0))))
    return params


def internlm2_llama(raw: dict) -> dict:
    """InternLM2 / 2.5: a Llama with grouped-query attention; `bias` covers q, k, v and o alike."""
    out = _common(raw)
    out.update(model_type="llama", num_key_value_heads=raw.get("num_key_value_heads",
                                                              raw["num_attention_heads"]),
               attention_bias=bool(raw.get("bias", False)), mlp_bias=False,
               rope_parameters=_rope(raw.get("rope_theta", 10000), raw.get("rope_scaling"), "InternLM2"))
    return out


def internlm_llama(raw: dict) -> dict:
    """InternLM v1: a Llama whose q, k, v and o projections carry biases when `bias` is set (7B), none
    otherwise (20B). Its code rotates with base 10000 always; the 7B-8k revisions name dynamic NTK scaling
    in a `rotary` section."""
    out = _common(raw)
    rotary = raw.get("rotary") or {}
    scaling = raw.get("rope_scaling")
    if rotary.get("type") == "dynamic":
        scaling = {"type": "dynamic", "factor": rotary.get("scaling_factor", 1.0)}
    out.update(model_type="llama", num_key_value_heads=raw.get("num_key_value_heads",
                                                              raw["num_attention_heads"]),
               attention_bias=bool(raw.get("bias", True)), mlp_bias=False,
               rope_parameters=_rope(rotary.get("base", 10000), scaling, "InternLM"))
    return out


def baichuan_llama(raw: dict) -> dict:
    """Baichuan-7B and Baichuan2-7B: a Llama with multi-head attention and rotary base 10000 (the code
    fixes it); Baichuan2's NormHead is a weight rule (`normalize_rows`), not a config field."""
    out = _common(raw)
    out.setdefault("max_position_embeddings", raw.get("model_max_length", 4096))
    out.update(model_type="llama", num_key_value_heads=raw["num_attention_heads"], attention_bias=False,
               mlp_bias=False, rope_parameters=_rope(10000, None, "Baichuan"))
    return out


def chatglm_glm(raw: dict) -> dict:
    """ChatGLM2/3 (and GLM-4's hub code): transformers' `glm` architecture, which GLM-4's converted
    checkpoints use. Multi-query groups become key-value heads, `kv_channels` the head size; rotary runs
    over half of each head with base 10000 × `rope_ratio`; q/k/v carry biases, the output projection none."""
    problems = [f"{key}={raw.get(key)!r}" for key, want in (
        ("rmsnorm", True), ("add_bias_linear", False), ("apply_residual_connection_post_layernorm", False),
        ("post_layer_norm", True)) if raw.get(key, want) != want]
    if problems:
        raise ConfigError(f"this ChatGLM checkpoint ({', '.join(problems)}) differs from the layout of "
                          "transformers' Glm architecture",
                          hint="pass --cfg-options trust_remote_code=True to run the hub's own code")
    heads = raw["num_attention_heads"]
    groups = raw.get("multi_query_group_num", heads) if raw.get("multi_query_attention") else heads
    eos = raw.get("eos_token_id", 2)
    out = {
        "model_type": "glm",
        "vocab_size": raw["padded_vocab_size"],
        "hidden_size": raw["hidden_size"],
        "intermediate_size": raw["ffn_hidden_size"],
        "num_hidden_layers": raw["num_layers"],
        "num_attention_heads": heads,
        "num_key_value_heads": groups,
        "head_dim": raw.get("kv_channels") or raw["hidden_size"] // heads,
        "rms_norm_eps": raw.get("layernorm_epsilon", 1e-5),
        "max_position_embeddings": raw.get("seq_length", 8192),
        "attention_bias": bool(raw.get("add_qkv_bias", True)),
        "tie_word_embeddings": bool(raw.get("tie_word_embeddings", False)),
        "pad_token_id": raw.get("pad_token_id", 0),
        "eos_token_id": eos,
        "bos_token_id": raw.get("bos_token_id"),
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0 * float(raw.get("rope_ratio", 1)),
                            "partial_rotary_factor": 0.5},
    }
    if raw.get("torch_dtype"):
        out["dtype"] = raw["torch_dtype"]
    return out

