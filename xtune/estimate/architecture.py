"""A model's shape, from the registry's figures or a `config.json`, and what follows from it: parameter
counts and the linear layers (the ones LoRA adapts and bitsandbytes quantises).

Lookup never downloads and never imports torch: a local folder's `config.json`, else the figures a
registered model carries (`xtune.registry.Model`), else a `config.json` already in the Hugging Face hub
cache. Anything else is a usage error saying how to make the figures available.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path

from xtune.errors import UsageError

# config.json keys for each figure, first match wins (Llama-style names, then family spellings).
_CONFIG_KEYS = {
    "hidden_size": ("hidden_size", "n_embd", "d_model"),
    "num_layers": ("num_hidden_layers", "num_layers", "n_layer"),
    "num_heads": ("num_attention_heads", "n_head"),
    "num_kv_heads": ("num_key_value_heads", "multi_query_group_num", "num_kv_heads"),
    "head_dim": ("qk_nope_head_dim", "head_dim", "kv_channels"),
    "intermediate_size": ("intermediate_size", "ffn_hidden_size", "n_inner"),
    "vocab_size": ("padded_vocab_size", "vocab_size"),
    "num_experts": ("num_local_experts", "n_routed_experts", "num_experts"),
    "experts_per_token": ("num_experts_per_tok", "moe_topk"),
    "num_shared_experts": ("n_shared_experts",),
    "moe_intermediate_size": ("moe_intermediate_size",),
    "first_dense_layers": ("first_k_dense_replace",),
    "kv_lora_rank": ("kv_lora_rank",),
    "q_lora_rank": ("q_lora_rank",),
    "rope_head_dim": ("qk_rope_head_dim",),
    "v_head_dim": ("v_head_dim",),
}


@dataclass(frozen=True)
class Linear:
    """One kind of linear layer: its HF module name, input and output width, and how many the model has."""

    name: str
    d_in: int
    d_out: int
    count: int
    expert: bool = False  # a routed expert's projection

    @property
    def params(self) -> int:
        return self.d_in * self.d_out * self.count


@dataclass(frozen=True)
class Architecture:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool = False
    num_experts: int = 0
    experts_per_token: int = 0
    num_shared_experts: int = 0
    moe_intermediate_size: int = 0
    first_dense_layers: int = 0
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    rope_head_dim: int = 0
    v_head_dim: int = 0
    source: str = ""  # where the figures came from, for the report

    @classmethod
    def from_figures(cls, figures: dict, source: str) -> Architecture:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in figures.items() if k in known and v is not None}
        missing = [k for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size")
                   if not values.get(k)]
        if missing:
            raise UsageError(f"the model's figures ({source}) lack {', '.join(missing)}")
        values.setdefault("num_kv_heads", values["num_heads"])
        values["num_kv_heads"] = values["num_kv_heads"] or values["num_heads"]
        values["head_dim"] = values.get("head_dim") or values["hidden_size"] // values["num_heads"]
        return cls(**{**values, "source": source})

    @property
    def moe_layers(self) -> int:
        return max(self.num_layers - self.first_dense_layers, 0) if self.num_experts else 0

    def linears(self) -> list[Linear]:
        """Every linear layer of the decoder (not the output projection), by kind."""
        h, layers, heads, hd = self.hidden_size, self.num_layers, self.num_heads, self.head_dim
        if self.kv_lora_rank:  # multi-head latent attention
            q_width, v_dim = heads * (hd + self.rope_head_dim), self.v_head_dim or hd
            if self.q_lora_rank:
                attention = [Linear("q_a_proj", h, self.q_lora_rank, layers),
                             Linear("q_b_proj", self.q_lora_rank, q_width, layers)]
            else:
                attention = [Linear("q_proj", h, q_width, layers)]
            attention += [Linear("kv_a_proj_with_mqa", h, self.kv_lora_rank + self.rope_head_dim, layers),
                          Linear("kv_b_proj", self.kv_lora_rank, heads * (hd + v_dim), layers),
                          Linear("o_proj", heads * v_dim, h, layers)]
        else:
            kv = self.num_kv_heads * hd
            attention = [Linear("q_proj", h, heads * hd, layers), Linear("k_proj", h, kv, layers),
                         Linear("v_proj", h, kv, layers), Linear("o_proj", heads * hd, h, layers)]
        dense_layers = layers - self.moe_layers
        out = attention + _mlp(h, self.intermediate_size, dense_layers)
        if self.moe_layers:
            moe_width = self.moe_intermediate_size or self.intermediate_size
            out += [Linear(n, i, o, c * self.num_experts, expert=True)
                    for n, i, o, c in _mlp_shapes(h, moe_width, self.moe_layers)]
            shared = moe_width * self.num_shared_experts
            out += _mlp(h, shared, self.moe_layers if shared else 0)
            out.append(Linear("gate", h, self.num_experts, self.moe_layers))  # the router
        return [linear for linear in out if linear.count]

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def output_params(self) -> int:
        """The output projection's own parameters (0 when it is the embedding matrix)."""
        return 0 if self.tie_word_embeddings else self.embedding_params

    @property
    def norm_params(self) -> int:
        return self.hidden_size * (2 * self.num_layers + 1)

    @property
    def linear_params(self) -> int:
        return sum(linear.params for linear in self.linears())

    @property
    def params(self) -> int:
        return self.linear_params + self.embedding_params + self.output_params + self.norm_params


def _mlp_shapes(h: int, width: int, count: int) -> list[tuple[str, int, int, int]]:
    return [("gate_proj", h, width, count), ("up_proj", h, width, count), ("down_proj", width, h, count)]


def _mlp(h: int, width: int, count: int) -> list[Linear]:
    return [Linear(n, i, o, c) for n, i, o, c in _mlp_shapes(h, width, count)] if width else []


def from_config_json(config: dict, source: str) -> Architecture:
    """The figures in an HF `config.json` (a multimodal config's `text_config` when there is one)."""
    config = {**config, **(config.get("text_config") or {})}
    figures = {}
    for name, keys in _CONFIG_KEYS.items():
        figures[name] = next((config[k] for k in keys if isinstance(config.get(k), int)), None)
    tied = config.get("tie_word_embeddings")
    gemma = str(config.get("model_type", "")).startswith("gemma")  # always tied, whatever the file says
    figures["tie_word_embeddings"] = bool(tied) if tied is not None else gemma
    if figures["kv_lora_rank"] and figures["num_kv_heads"] is None:
        figures["num_kv_heads"] = figures["num_heads"]
    return Architecture.from_figures(figures, source)


def hub_cache_config(hub_id: str) -> Path | None:
    """`config.json` of `hub_id` in the Hugging Face hub cache, if some earlier download left one there."""
    root = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")), "hub")
    snapshots = Path(root, f"models--{hub_id.replace('/', '--')}", "snapshots")
    if not snapshots.is_dir():
        return None
    found = sorted(snapshots.glob("*/config.json"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def find_architecture(name_or_path: str, registry) -> Architecture:
    """The architecture of a model folder, a registered model (hub id or name), or a cached hub model."""
    local = Path(str(name_or_path)).expanduser()
    if (local / "config.json").is_file():
        return _read_config(local / "config.json")
    for model in registry.models:
        if name_or_path in (model.hub_id, model.name) and model.hidden_size:
            figures = {f.name: getattr(model, f.name) for f in fields(Architecture) if hasattr(model, f.name)}
            return Architecture.from_figures(figures, f"registry: {model.name} ({model.plugin})")
    cached = hub_cache_config(str(name_or_path))
    if cached is not None:
        return _read_config(cached)
    known = next((m for m in registry.models if name_or_path in (m.hub_id, m.name)), None)
    if known is not None:
        raise UsageError(f"no architecture figures for model {str(name_or_path)!r}: {known.plugin} "
                         "registers it without them (Hugging Face VLM checkpoints have none yet, LLaVA "
                         "compositions do)",
                         hint="pass a local folder with its config.json (the language model's figures "
                              "are read from text_config; the vision tower is not counted)")
    raise UsageError(f"no architecture figures for model {str(name_or_path)!r}: it is not a registered "
                     "model, not a local folder with config.json, and has no config.json in the Hugging "
                     "Face cache",
                     hint="download just its config.json, or register the model with its figures "
                          "(register_models)")


def read_config_json(path: Path) -> dict:
    """A `config.json` as a dict, or one UsageError naming the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read {str(path)!r}: {exc}") from None


def _read_config(path: Path) -> Architecture:
    return from_config_json(read_config_json(path), f"config.json at {path.parent}")
