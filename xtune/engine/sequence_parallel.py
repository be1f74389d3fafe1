"""Sequence parallel (`sequence_parallel_size = N` in a recipe, XTuner's setting): DeepSpeed-Ulysses.

Each packed row is cut along the sequence into N shards, one per process of a sequence-parallel group, so
a process holds 1/N of every activation. Everything but attention works on the shard alone (embeddings,
MLPs, norms, the output layer and the loss, with rotary positions taken from the row's own position ids).
Attention needs the whole sequence: DeepSpeed's `DistributedAttention` exchanges query, key and value with
an all-to-all from "my shard of the sequence, every head" to "the whole sequence, my 1/N of the heads"
(key-value groups stay with their query heads), attends, and exchanges back. The mask is the packed row's
block-diagonal causal mask, built from the full row's position ids, which ride in the batch
(`sp_position_ids`) and reach the attention function through transformers' keyword arguments.

The labels are shifted on the whole row before it is cut (`shift_labels`: the token each position
predicts), so the token that crosses a shard boundary is still trained. The loss counts each shard's own
trained tokens (`xtune.objectives.units`), so the training loop's global mean over all processes is the
mean over the whole row. Groups: processes `k*N .. k*N+N-1` share rows; data parallelism runs over the
`world / N` groups (the sampler deals rows by group), and gradients are averaged over every process.
"""

from __future__ import annotations

from xtune.data.tokenize import IGNORE_INDEX
from xtune.errors import ConfigError

ATTENTION = "xtune_ulysses"
_GROUPS: dict[int, object] = {}  # sequence-parallel size -> this process's group (made once per process)


def recipe_problems(cfg) -> list[str]:
    """What in the recipe rules out its `sequence_parallel_size` (preflight; no torch needed)."""
    size = cfg.get("sequence_parallel_size", 1)
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        return [f"sequence_parallel_size={size!r} must be a positive whole number"]
    problems = []
    if size > 1 and not cfg.train_dataset.get("pack_to_max_length"):
        problems.append("sequence_parallel_size > 1 needs pack_to_max_length=True (rows are cut along the "
                        "sequence)")
    objective = (cfg.get("objective") or {}).get("type", "sft")
    if size > 1 and objective != "sft":
        problems.append(f"sequence_parallel_size > 1 trains objective 'sft' only, not {objective!r}")
    return problems


def check_layout(size: int, world_size: int, *, heads: int | None = None,
                 kv_heads: int | None = None) -> None:
    """One ConfigError when `size` does not divide the processes or the model's heads."""
    problems = []
    if size > 1 and world_size % size:
        problems.append(f"sequence_parallel_size={size} does not divide the {world_size} processes "
                        "(NPROC_PER_NODE x NNODES)")
    for name, count in (("attention heads", heads), ("key-value heads", kv_heads)):
        if size > 1 and count and count % size:
            problems.append(f"sequence_parallel_size={size} does not divide the model's {count} {name}")
    if problems:
        raise ConfigError("; ".join(problems))


def model_heads(cfg) -> dict:
    """{heads, kv_heads} from the local model's config.json (nothing for a hub id not yet downloaded)."""
    import json
    from pathlib import Path

    config = Path(str(cfg.model.get("pretrained_model_name_or_path", ""))) / "config.json"
    if not config.is_file():
        return {}
    data = json.loads(config.read_text())
    data = data.get("text_config", data)
    heads = data.get("num_attention_heads")
    return {"heads": heads, "kv_heads": data.get("num_key_value_heads") or heads}


class SequenceParallel:
    """This process's place in its sequence-parallel group, and the two things the run does with it."""

    def __init__(self, size: int):
        import torch.distributed as dist

        rank, world = dist.get_rank(), dist.get_world_size()
        self.size = size
        self.rank = rank % size
        self.data_rank, self.data_size = rank // size, world // size
        if size not in _GROUPS:  # every process makes every group, in the same order
            for first in range(0, world, size):
                group = dist.new_group(list(range(first, first + size)))
                if first <= rank < first + size:
                    _GROUPS[size] = group
        self.group = _GROUPS[size]

    def install(self, llm) -> None:
        """Make the model attend through the all-to-all (every attention layer reads its config)."""
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(ATTENTION, self.attention)
        AttentionMaskInterface.register(ATTENTION, _no_mask)
        base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
        base.set_attn_implementation(ATTENTION)

    def shard(self, batch: dict) -> dict:
        """This process's shard of a packed batch (the collator pads rows to a multiple of the size)."""
        import torch

        ids = batch["input_ids"]
        width = ids.shape[1]
        if width % self.size:
            raise ConfigError(f"a packed row of {width} tokens does not split into {self.size} shards")
        shifted = torch.full_like(batch["labels"], IGNORE_INDEX)
        shifted[:, :-1] = batch["labels"][:, 1:]
        part = slice(self.rank * width // self.size, (self.rank + 1) * width // self.size)
        out = {k: v for k, v in batch.items() if k != "labels"}
        out.update(input_ids=ids[:, part], position_ids=batch["position_ids"][:, part],
                   shift_labels=shifted[:, part], sp_position_ids=batch["position_ids"])
        return out

    def attention(self, module, query, key, value, attention_mask, dropout: float = 0.0,
                  scaling: float | None = None, **kwargs):
        """transformers' attention signature: (batch, heads, shard, dim) in, (batch, shard, heads, dim)
        out."""
        from deepspeed.sequence.layer import DistributedAttention

        positions = kwargs["sp_position_ids"]

        def local(q, k, v, *args, **kw):  # (batch, sequence, heads / N, dim): the whole sequence
            return _packed_attention(module, q, k, v, positions, dropout, scaling)

        layer = DistributedAttention(local, self.group, scatter_idx=2, gather_idx=1)
        out = layer(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), 0)
        return out, None


def _no_mask(*args, **kwargs):
    """The per-shard mask transformers would build is of no use: the attention builds the row's own."""
    return None


def _packed_attention(module, q, k, v, positions, dropout: float, scaling: float | None):
    """Causal attention inside each packed sample of the whole row, (batch, seq, heads, dim) in and out."""
    import torch
    import torch.nn.functional as F

    sample = torch.cumsum((positions == 0).long(), dim=1)  # sample number of each position
    causal = torch.ones(positions.shape[1], positions.shape[1], dtype=torch.bool, device=q.device).tril()
    mask = (sample[:, :, None] == sample[:, None, :]) & causal  # (batch, seq, seq)
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None],
                                         dropout_p=dropout if module.training else 0.0, scale=scaling,
                                         enable_gqa=k.shape[1] != q.shape[1])
    return out.transpose(1, 2)
