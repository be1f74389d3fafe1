"""Log-probabilities of the tokens a batch predicts, summed per sample, whatever the batch layout.

Preference batches carry `sample_ids` (which sample each token belongs to, -1 on padding) beside
`labels` (-100 off the trained tokens), so packed rows (several samples, position_ids restarting) and
padded rows (one sample each) are summed the same way. As for SFT, the output layer runs only where a
token is predicted (transformers' boolean `logits_to_keep`); models that cannot take it (prompt-learning
adapters, some hub code) compute all logits and the same positions are picked from them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch

from xtune.data.tokenize import IGNORE_INDEX  # noqa: F401 - the objectives read labels with it

# Batch keys the objectives read themselves; every other key is the model's input.
OBJECTIVE_KEYS = frozenset({"labels", "shift_labels", "sample_ids", "ref_logps", "unit_labels",
                            "prompt_messages", "columns"})


def model_inputs(batch: dict) -> dict:
    """The model's keyword arguments: input_ids, the mask or positions the collator made, a vision-language
    batch's pixel inputs (pixel_values, image_grid_thw, ...), no KV cache."""
    kwargs = {key: value for key, value in batch.items() if key not in OBJECTIVE_KEYS and value is not None}
    kwargs["use_cache"] = False
    return kwargs


def keeps_selected_logits(llm) -> bool:
    """Whether `llm` can compute logits for a boolean mask of positions (transformers' `logits_to_keep`).

    Prompt-learning adapters (prefix / prompt / p-tuning) prepend virtual tokens, which would shift the
    mask, and models with their own hub code may not take the argument: both use the model's own loss.
    """
    config = getattr(llm, "active_peft_config", None)
    if config is not None and getattr(config, "is_prompt_learning", False):
        return False
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def sample_index(batch: dict) -> torch.Tensor:
    """(batch, length) sample number of every token, -1 on padding (one sample per row without sample_ids)."""
    ids = batch.get("sample_ids")
    if ids is not None:
        return ids
    rows, width = batch["input_ids"].shape
    ids = torch.arange(rows, device=batch["input_ids"].device)[:, None].expand(rows, width).clone()
    if batch.get("attention_mask") is not None:
        ids[batch["attention_mask"] == 0] = -1
    return ids


@dataclass
class TokenLogps:
    """Log-probs of the predicted tokens, flattened in batch order, with the sample each belongs to."""

    logps: torch.Tensor  # (K,) log p(token | context)
    sample: torch.Tensor  # (K,) its sample number
    trained: torch.Tensor  # (K,) bool: an answer token (labelled), not prompt
    num_samples: int

    def _per_sample(self, values: torch.Tensor, trained_only: bool) -> torch.Tensor:
        values = values * self.trained if trained_only else values
        out = torch.zeros(self.num_samples, dtype=values.dtype, device=values.device)
        return out.index_add(0, self.sample, values)

    def sums(self, trained_only: bool = True) -> torch.Tensor:
        """(samples,) summed log-probs of the answer tokens (of every predicted token with False)."""
        return self._per_sample(self.logps, trained_only)

    def counts(self, trained_only: bool = True) -> torch.Tensor:
        return self._per_sample(torch.ones_like(self.logps), trained_only)

    def means(self) -> torch.Tensor:
        return self.sums() / self.counts().clamp(min=1.0)


def predicted_tokens(batch: dict, *, all_tokens: bool = False):
    """(predict, trained, sample), each (batch, length - 1) and aligned with the predicted token: which tokens
    the log-probs cover (the trained ones; with `all_tokens` every token after the first of its sample),
    which of them are answer tokens, and the sample each belongs to."""
    labels, ids = batch["labels"], sample_index(batch)
    trained = labels[:, 1:] != IGNORE_INDEX
    predict = trained | ((ids[:, 1:] == ids[:, :-1]) & (ids[:, 1:] >= 0)) if all_tokens else trained
    return predict, trained, ids[:, 1:]


def token_logps(llm, batch: dict, *, all_tokens: bool = False, selected: bool | None = None) -> TokenLogps:
    """Log-probs of the trained tokens of every sample (with `all_tokens`, of every token after the first one
    of its sample, prompt included: ORPO's NLL as TRL computes it)."""
    labels = batch["labels"]
    predict, trained, sample = predicted_tokens(batch, all_tokens=all_tokens)
    targets = torch.where(trained, labels[:, 1:], batch["input_ids"][:, 1:])[predict]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = predict
    if selected is None:
        selected = keeps_selected_logits(llm)
    if selected:
        logits = llm(**model_inputs(batch), logits_to_keep=keep).logits
    else:
        logits = llm(**model_inputs(batch)).logits[:, -labels.shape[1]:][keep]
    logits = logits.float().reshape(-1, logits.shape[-1])
    logps = logits.gather(-1, targets[:, None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return TokenLogps(logps, sample[predict], trained[predict], int(sample_index(batch).max().item()) + 1)


def sample_ends(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, columns) of the last token of every sample, in sample order."""
    ids = sample_index(batch)
    flat = ids.reshape(-1)
    positions = torch.arange(flat.numel(), device=flat.device)
    valid = flat >= 0
    ends = torch.full((int(flat.max().item()) + 1,), -1, dtype=torch.long, device=flat.device)
    ends = ends.scatter_reduce(0, flat[valid], positions[valid], reduce="amax")
    return ends // ids.shape[1], ends % ids.shape[1]


def pair_metrics(chosen_rewards, rejected_rewards, chosen_logps=None, rejected_logps=None) -> dict:
    """The metrics TRL logs for a preference batch (detached means)."""
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    out = {"rewards/chosen": chosen_rewards.mean(), "rewards/rejected": rejected_rewards.mean(),
           "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
           "rewards/margins": (chosen_rewards - rejected_rewards).mean()}
    if chosen_logps is not None:
        out["logps/chosen"] = chosen_logps.detach().mean()
        out["logps/rejected"] = rejected_logps.detach().mean()
    return out
