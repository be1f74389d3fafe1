"""Run by tests/test_distributed.py under torchrun (2 processes, gloo): one packed row through a tiny model
whole in each process, and cut in two with sequence parallel; writes the loss and gradients of both."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from xtune.data.collate import Collator
from xtune.engine.sequence_parallel import SequenceParallel
from xtune.objectives.sft import SFT
from xtune.objectives.units import Share


def tiny(arch: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  attn_implementation="sdpa")
    if arch == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    return model.float()


def packed_row(width: int = 48) -> dict:
    """Three samples in one row (positions restarting), prompts unlabelled, padding after them."""
    gen = torch.Generator().manual_seed(1)
    ids, labels, positions = [], [], []
    for prompt, answer in ((4, 9), (6, 13), (3, 7)):
        seq = torch.randint(3, 97, (prompt + answer,), generator=gen).tolist()
        ids += seq
        labels += [-100] * prompt + seq[prompt:]
        positions += list(range(len(seq)))
    return Collator(0, packed=True, pad_to_multiple_of=width)([{"input_ids": ids, "labels": labels,
                                                                 "position_ids": positions}])


def grads(model) -> dict:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def main(arch: str, out: str) -> None:
    from xtune.compat import init_distributed_without_cuda

    init_distributed_without_cuda(use_deepspeed=True)  # gloo, and DeepSpeed's comm without its JIT op
    batch, sft = packed_row(), SFT()
    whole = tiny(arch)  # every process: the row in one piece
    loss = sft.loss(whole, batch)["loss"]
    loss.backward()
    reference = grads(whole)
    model = tiny(arch)
    sp = SequenceParallel(2)
    sp.install(model)
    shard = sp.shard(batch)
    total = torch.tensor([float(sft.units(shard)["tokens"])], dtype=torch.float64)
    dist.all_reduce(total)
    part = sft.loss(model, shard, share=Share({"tokens": float(total)}))["loss"]
    part.backward()
    summed = torch.tensor([float(part)])
    dist.all_reduce(summed)
    got = grads(model)
    for g in got.values():
        dist.all_reduce(g)  # the two shards' contributions to the shared weights
    worst = max(float((got[n] - reference[n]).abs().max() / reference[n].abs().max().clamp(min=1e-12))
                for n in reference)
    if dist.get_rank() == 0:
        with open(out, "w") as fh:
            json.dump({"loss": float(loss), "sp_loss": float(summed), "grad_rel": worst,
                       "grads": len(reference), "shard_width": int(shard["input_ids"].shape[1])}, fh)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
