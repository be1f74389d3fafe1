"""What each loss is a mean over, so that a global batch trains the same model however it is split.

A loss that is a mean over tokens (SFT, ORPO's NLL) or over pairs (DPO, SimPO, reward) must be divided by
the count of the *whole* optimizer update (every micro-batch of every process), not by each micro-batch's
own count: otherwise a 10-token answer weighs as much as a 500-token one, and what is learned depends on
how the global batch was cut into micro-batches, accumulation steps and ranks (the bug Hugging Face's
Trainer fixed with `num_items_in_batch`).

An objective that declares `units(batch) -> {unit: count}` (counted from the batch before the forward pass)
is handed a `Share` by the training loop, which has summed those counts over the update's micro-batches and
over the data-parallel processes; the objective divides each term's sum by `share.total(unit)`. Without a
share (validation, a one-off forward) the micro-batch's own counts are the denominators, which is the same
loss for a global batch of one micro-batch. Objectives without `units` (PPO, a plugin's) keep a mean per
micro-batch, averaged by the loop.
"""

from __future__ import annotations

import torch

from xtune.data.tokenize import IGNORE_INDEX


class Share:
    """The global counts of one optimizer update's units (a plain class: DDP passes it through untouched)."""

    __slots__ = ("totals",)

    def __init__(self, totals: dict[str, float]):
        self.totals = dict(totals)

    def total(self, unit: str) -> float:
        return max(float(self.totals.get(unit, 0.0)), 1.0)

    def __repr__(self) -> str:
        return f"Share({self.totals})"


def local_share(units: dict[str, int]) -> Share:
    """The share of a micro-batch on its own (its own counts as denominators)."""
    return Share({k: float(v) for k, v in units.items()})


def divide(total: torch.Tensor, unit: str, share: Share) -> torch.Tensor:
    """`total` (a sum over this micro-batch's units) as its part of the update's mean."""
    return total / share.total(unit)


# ------------------------------------------------------------------------------------------- counting
def trained_tokens(batch: dict) -> int:
    """Tokens with a label after them: what SFT's cross-entropy averages over (a sequence-parallel shard
    carries the labels already shifted, `shift_labels`)."""
    if "shift_labels" in batch:
        return int((batch["shift_labels"] != IGNORE_INDEX).sum())
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def sample_count(batch: dict) -> int:
    """Samples of a preference batch (`sample_ids`, -1 on padding) or rows of a plain one."""
    ids = batch.get("sample_ids")
    if ids is None:
        return int(batch["input_ids"].shape[0])
    return int(ids.max().item()) + 1 if ids.numel() else 0


def chosen_tokens(batch: dict, *, prompt_too: bool) -> int:
    """Tokens of the chosen (even-numbered) samples that ORPO's / CPO's NLL averages over."""
    from xtune.objectives.logps import predicted_tokens

    predict, trained, sample = predicted_tokens(batch, all_tokens=prompt_too)
    chosen = (sample % 2 == 0) & predict
    if not prompt_too:
        chosen = chosen & trained
    return int(chosen.sum())
