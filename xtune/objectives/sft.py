"""`sft`: supervised fine-tuning, the token-mean cross-entropy over the trained tokens (of the whole
optimizer update: `xtune.objectives.units`).

The loss runs the output layer only where a label follows (transformers' `logits_to_keep` mask): with a
49k-token vocabulary the output layer and its log-softmax are a fifth of a small model's step, and the
prompt positions (system prompt, question) need neither. Models that cannot take the mask use their own
loss, which is the same token-mean cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xtune.objectives.logps import IGNORE_INDEX, keeps_selected_logits, model_inputs
from xtune.objectives.units import Share, divide, local_share, trained_tokens


class SFT:
    """Recipes without an `objective` section train with this, exactly as before objectives existed."""

    def __init__(self):
        self._selected: dict[int, bool] = {}  # id(llm) -> whether it takes a logits_to_keep mask

    def units(self, batch: dict) -> dict:
        return {"tokens": trained_tokens(batch)}

    def loss(self, llm, batch: dict, reference=None, share: Share | None = None) -> dict:
        """The cross-entropy summed over this micro-batch's trained tokens, divided by the update's count of
        them (`share`; this micro-batch's own count without one)."""
        share = share or local_share(self.units(batch))
        if id(llm) not in self._selected:
            self._selected[id(llm)] = keeps_selected_logits(llm)
        kwargs = model_inputs(batch)
        if "shift_labels" in batch:  # a sequence-parallel shard: the labels were shifted on the whole row
            total = shifted_token_loss(llm, batch["shift_labels"], kwargs)
        elif self._selected[id(llm)]:
            total = labelled_token_loss(llm, batch["labels"], kwargs, reduction="sum")
        else:  # the model's own loss is the mean over the same tokens
            total = llm(**kwargs, labels=batch["labels"]).loss * trained_tokens(batch)
        return {"loss": divide(total, "tokens", share)}


def shifted_token_loss(llm, shift_labels, model_kwargs: dict):
    """Summed cross-entropy where `shift_labels[t]` is what position t predicts (no shift here)."""
    keep = shift_labels != IGNORE_INDEX
    if not bool(keep.any()):
        return llm(**model_kwargs, logits_to_keep=1).logits.sum() * 0.0
    logits = llm(**model_kwargs, logits_to_keep=keep).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), shift_labels[keep], reduction="sum")


def labelled_token_loss(llm, labels, model_kwargs: dict, reduction: str = "mean"):
    """Cross-entropy over the tokens that carry a label ('mean' or 'sum'), computing logits only at the
    positions that predict them (position t predicts label t + 1)."""
    predicts = labels[:, 1:] != IGNORE_INDEX
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = predicts
    if not bool(predicts.any()):  # nothing to learn in this batch; still a graph for the optimizer step
        logits = llm(**model_kwargs, logits_to_keep=1).logits
        return logits.sum() * 0.0
    logits = llm(**model_kwargs, logits_to_keep=keep).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels[:, 1:][predicts],
                           reduction=reduction)
