"""The tensor operations that turn a legacy hub-code checkpoint into a native architecture's weights.

Each factory takes the *native* config and returns a transformers ``ConversionOps``, the unit of
transformers' own weight-conversion machinery (`transformers.core_model_loading`): it runs while the
checkpoint streams in, before any quantisation, and its `reverse_op` writes the original layout back.
`xtune.registry.CheckpointConversion.weights` names these factories by import path, so a plugin can add
its own for another family.
"""

from __future__ import annotations

import torch
from transformers.core_model_loading import Chunk, ConversionOps


def _tensors(input_dict: dict, patterns: list[str]) -> list[torch.Tensor]:
    """The collected tensors in the order of `patterns` (one per pattern)."""
    out = []
    for pattern in patterns:
        value = input_dict[pattern]
        out.append(value[0] if isinstance(value, list) else value)
    return out


class GroupedQKV(ConversionOps):
    """InternLM2's fused `wqkv`: for each key-value head, its group of query heads, then its key, then its
    value (`view(kv_heads, group + 2, head_dim, ...)`). A plain q|k|v split of the same tensor is wrong
    whenever there are several key-value heads; this one is exact."""

    def __init__(self, heads: int, kv_heads: int, head_dim: int, fuse: bool = False):
        if heads % kv_heads:
            raise ValueError(f"{heads} attention heads do not split into {kv_heads} key-value groups")
        self.heads, self.kv_heads, self.head_dim, self.fuse = heads, kv_heads, head_dim, fuse

    @torch.no_grad()
    def convert(self, input_dict, source_patterns, target_patterns, **kwargs):
        group = self.heads // self.kv_heads
        if self.fuse:
            q, k, v = _tensors(input_dict, source_patterns)
            rest = q.shape[1:]
            parts = [q.reshape(self.kv_heads, group, self.head_dim, *rest),
                     k.reshape(self.kv_heads, 1, self.head_dim, *rest),
                     v.reshape(self.kv_heads, 1, self.head_dim, *rest)]
            return {target_patterns[0]: torch.cat(parts, dim=1).reshape(-1, *rest).contiguous()}
        (fused,) = _tensors(input_dict, source_patterns[:1])
        rest = fused.shape[1:]
        grouped = fused.reshape(self.kv_heads, group + 2, self.head_dim, *rest)
        q = grouped[:, :group].reshape(-1, *rest)
        k = grouped[:, group].reshape(-1, *rest)
        v = grouped[:, group + 1].reshape(-1, *rest)
        return dict(zip(target_patterns, (q.contiguous(), k.contiguous(), v.contiguous()), strict=True))

    @property
    def reverse_op(self) -> ConversionOps:
        return GroupedQKV(self.heads, self.kv_heads, self.head_dim, fuse=not self.fuse)


class SplitSizes(ConversionOps):
    """One fused tensor cut along dim 0 into pieces of the given sizes (ChatGLM's `query_key_value`: all
    query heads, then the key groups, then the value groups). The sizes come from the config, not from the
    model's parameters, so a quantised (packed) target does not change them."""

    def __init__(self, sizes: tuple[int, ...], fuse: bool = False):
        self.sizes, self.fuse = tuple(sizes), fuse

    @torch.no_grad()
    def convert(self, input_dict, source_patterns, target_patterns, **kwargs):
        if self.fuse:
            return {target_patterns[0]: torch.cat(_tensors(input_dict, source_patterns), dim=0).contiguous()}
        (fused,) = _tensors(input_dict, source_patterns[:1])
        if fused.shape[0] != sum(self.sizes):
            raise ValueError(f"fused tensor of {fused.shape[0]} rows does not split into {self.sizes}")
        parts = torch.split(fused, self.sizes, dim=0)
        return {t: p.contiguous() for t, p in zip(target_patterns, parts, strict=True)}

    @property
    def reverse_op(self) -> ConversionOps:
        return SplitSizes(self.sizes, fuse=not self.fuse)


class NormalizeRows(ConversionOps):
    """Baichuan2's NormHead: the output projection is used with every row scaled to unit length. Doing it
    once at load gives the same logits with a plain `lm_head` (computed in float32, stored in the dtype the
    model loads in). Rows that are already unit length (a checkpoint xtune wrote back) are kept bit for
    bit, so writing and reading again changes nothing. Writing back keeps the normalised rows: NormHead
    normalises them again to themselves."""

    TOLERANCE = 1e-2

    def __init__(self, reverse: bool = False):
        self.reverse = reverse

    @torch.no_grad()
    def convert(self, input_dict, source_patterns, target_patterns, **kwargs):
        (weight,) = _tensors(input_dict, source_patterns[:1])
        if not self.reverse:
            norms = weight.float().norm(dim=-1)
            if not torch.allclose(norms, torch.ones_like(norms), atol=self.TOLERANCE):
                weight = torch.nn.functional.normalize(weight.float(), dim=-1).to(weight.dtype)
        return {target_patterns[0]: weight.contiguous()}

    @property
    def reverse_op(self) -> ConversionOps:
        return NormalizeRows(reverse=not self.reverse)


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def grouped_qkv(config) -> ConversionOps:
    return GroupedQKV(config.num_attention_heads, config.num_key_value_heads, _head_dim(config))


def qkv_sizes(config) -> ConversionOps:
    q = config.num_attention_heads * _head_dim(config)
    kv = config.num_key_value_heads * _head_dim(config)
    return SplitSizes((q, kv, kv))


def thirds(config) -> ConversionOps:
    """Baichuan's `W_pack`: q, k and v stacked, each hidden_size rows."""
    return Chunk(dim=0)


def normalize_rows(config) -> ConversionOps:
    return NormalizeRows()
