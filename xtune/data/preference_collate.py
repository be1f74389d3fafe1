"""Batches of preference rows: pairs (or KTO units) with `sample_ids`, and left-padded prompts (PPO, GRPO).

A preference row holds whole units, each sequence with positions restarting at 0. Packed, the rows go to
the model as they are (position_ids, no attention mask: no token attends across samples). Unpacked, each
sequence becomes a batch row of its own with an attention mask, in the same order (chosen, rejected,
chosen, ...), which is TRL's layout with the pairs interleaved. Either way `sample_ids` says which sample
every token belongs to (-1 on padding), so an objective sums log-probs per sample without caring which
layout it got; `ref_logps` (precomputed reference log-probs, one per sample) and `unit_labels` (KTO) are
flattened in the same sample order.
"""

from __future__ import annotations

from xtune.data.collate import Collator
from xtune.data.packing import sample_lengths


class PreferenceCollator:
    """list of preference rows -> input_ids, labels, position_ids or attention_mask, sample_ids (+ extras)."""

    def __init__(self, pad_id: int, packed: bool, pad_to_multiple_of: int | None = None):
        self.packed = packed
        self.collate = Collator(pad_id, packed, pad_to_multiple_of)

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        lengths = [sample_lengths(row["position_ids"]) for row in rows]
        if self.packed:
            batch = self.collate(rows)
            sample_ids = torch.full_like(batch["input_ids"], -1)
            k = 0
            for b, row_lengths in enumerate(lengths):
                start = 0
                for n in row_lengths:
                    sample_ids[b, start:start + n] = k
                    start, k = start + n, k + 1
        else:
            samples = []
            for row, row_lengths in zip(rows, lengths, strict=True):
                start = 0
                for n in row_lengths:
                    samples.append({"input_ids": row["input_ids"][start:start + n],
                                    "labels": row["labels"][start:start + n]})
                    start += n
            batch = self.collate(samples)
            sample_ids = torch.arange(len(samples))[:, None].expand_as(batch["input_ids"]).clone()
            sample_ids[batch["attention_mask"] == 0] = -1
        batch["sample_ids"] = sample_ids
        for key, dtype in (("ref_logps", torch.float32), ("unit_labels", torch.long)):
            if key in rows[0]:
                batch[key] = torch.tensor([v for row in rows for v in row[key]], dtype=dtype)
        return batch


class PromptCollator:
    """Prompts, left-padded for generation, with the prompt messages the reward model is shown and each
    record's columns (JSON strings) the reward functions read: PPO ignores them, GRPO decodes them."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, row in enumerate(rows):
            n = len(row["input_ids"])
            input_ids[b, width - n:] = torch.as_tensor(row["input_ids"], dtype=torch.long)
            mask[b, width - n:] = 1
        return {"input_ids": input_ids, "attention_mask": mask,
                "prompt_messages": [row["prompt_messages"] for row in rows],
                "columns": [row["columns"] for row in rows]}


def collator_for(cfg: dict, tokenizer):
    """The collator for a recipe's `train_dataset` settings: SFT's, or the one for its preference `rows`."""
    from xtune.data.collate import build_collator, pad_token_id

    rows = cfg.get("rows", "sft")
    if rows == "prompts":
        return PromptCollator(pad_token_id(tokenizer))
    if rows in ("pairs", "unpaired"):
        return PreferenceCollator(pad_token_id(tokenizer), packed=bool(cfg.get("pack_to_max_length")),
                                  pad_to_multiple_of=cfg.get("pad_to_multiple_of"))
    return build_collator(cfg, tokenizer)
