"""Batches for the dataloader: padding with the tokenizer's pad id (the rows' order: `xtune.data.sampler`).

Unpacked rows are padded to the longest row of the batch and get an `attention_mask`; packed rows get
`position_ids` instead and no attention mask, because transformers only derives the per-sample
block mask from position_ids when no attention mask is given. Padding of a packed row continues as a
sample of its own (positions 0..k), so it attends to nothing real; its labels are ignored anyway.
"""

from __future__ import annotations

from xtune.data.tokenize import IGNORE_INDEX
from xtune.errors import ConfigError


def pad_token_id(tokenizer) -> int:
    """The tokenizer's pad id; EOS when it has none (padded positions are masked and ignored)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    raise ConfigError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has neither a pad nor an EOS "
                      "token", hint="set tokenizer.pad_token in the recipe")


class Collator:
    """list of rows -> dict of tensors: input_ids, labels, and attention_mask or position_ids."""

    def __init__(self, pad_id: int, packed: bool, pad_to_multiple_of: int | None = None):
        self.pad_id = pad_id
        self.packed = packed
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = len(rows)
        input_ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
        extra = torch.zeros((batch, width), dtype=torch.long)
        for b, row in enumerate(rows):
            n = len(row["input_ids"])
            input_ids[b, :n] = torch.as_tensor(row["input_ids"], dtype=torch.long)
            labels[b, :n] = torch.as_tensor(row["labels"], dtype=torch.long)
            if self.packed:
                extra[b, :n] = torch.as_tensor(row["position_ids"], dtype=torch.long)
                extra[b, n:] = torch.arange(width - n)
            else:
                extra[b, :n] = 1
        key = "position_ids" if self.packed else "attention_mask"
        return {"input_ids": input_ids, "labels": labels, key: extra}


def build_collator(cfg: dict, tokenizer) -> Collator:
    """The collator for a recipe's `train_dataset` settings."""
    return Collator(pad_token_id(tokenizer), packed=bool(cfg.get("pack_to_max_length")),
                    pad_to_multiple_of=cfg.get("pad_to_multiple_of"))
