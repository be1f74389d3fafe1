"""GRPO's arithmetic, as TRL 1.16's `GRPOTrainer` defines it: group-relative advantages from the rewards, and
the clipped surrogate with an optional KL term, aggregated four ways (`loss_type`).

Advantages (TRL's `sum_then_normalize`): each reward function's value times its weight, summed with
None counting as 0; a completion no function scored is left out of its group's mean and gets advantage 0.
The advantage is the reward minus its group's mean, divided by (std + 1e-4) of the group
(`scale_rewards='group'`), of the whole batch (`'batch'`), or not at all (`'none'`, Dr. GRPO).

Loss per token: -min(r * A, clip(r, 1 - epsilon, 1 + epsilon_high) * A) with r the importance ratio against
the sampling policy, plus beta x the k3 estimate of KL to the reference, exp(ref - logp) - (ref - logp) - 1,
times r (TRL's bias correction for completions sampled from the old policy).
The aggregation divides by what the whole optimizer update holds (`xtune.objectives.units`), which for one
micro-batch in one process is exactly TRL's:
- `grpo`: the mean over completions of each completion's token mean;
- `bnpo` and `dapo`: the sum over the tokens / the update's completion tokens;
- `dr_grpo`: the sum over the tokens / (completions x max_completion_length).
"""

from __future__ import annotations

import torch

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")
SCALE_REWARDS = ("group", "batch", "none")


def nanstd(values: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """The sample standard deviation (Bessel-corrected) ignoring NaNs, as TRL's `nanstd`."""
    mean = torch.nanmean(values, dim=dim, keepdim=dim is not None)
    count = (~torch.isnan(values)).sum(dim=dim) if dim is not None else (~torch.isnan(values)).sum()
    variance = torch.nanmean((values - mean) ** 2, dim=dim) * count / (count - 1)
    return variance.sqrt()


def group_advantages(per_function: torch.Tensor, weights: torch.Tensor, num_generations: int,
                     scale_rewards: str = "group") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(advantages, rewards, zero_std) of completions ordered group by group; `per_function` is
    (completions, functions) with NaN where a function returned None."""
    unscorable = torch.isnan(per_function).all(dim=1)
    rewards = (per_function * weights[None, :]).nansum(dim=1)
    rewards[unscorable] = torch.nan
    grouped = rewards.view(-1, num_generations)
    mean = torch.nanmean(grouped, dim=1).repeat_interleave(num_generations)
    if scale_rewards == "batch":
        std = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    else:
        std = nanstd(grouped, dim=1).repeat_interleave(num_generations) if num_generations > 1 else \
            torch.zeros_like(rewards)
    advantages = rewards - mean
    if scale_rewards != "none":
        advantages = advantages / (std + 1e-4)
    zero_std = torch.isclose(std, torch.zeros_like(std))
    return torch.nan_to_num(advantages, nan=0.0), rewards, zero_std


def token_terms(logps, old_logps, ref_logps, advantages, *, epsilon_low: float, epsilon_high: float,
                beta: float) -> tuple[torch.Tensor, dict]:
    """(per-token loss, per-token diagnostics) before aggregation; one advantage per completion."""
    advantages = advantages[:, None]
    ratio = torch.exp(logps - old_logps)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    per_token = -torch.min(ratio * advantages, clipped * advantages)
    terms = {"clip_low": ((ratio < 1 - epsilon_low) & (advantages < 0)).float(),
             "clip_high": ((ratio > 1 + epsilon_high) & (advantages > 0)).float()}
    terms["clip_region"] = torch.maximum(terms["clip_low"], terms["clip_high"])
    if beta != 0.0:
        # k3 estimate of KL(policy || reference), importance-weighted to the sampling policy (TRL's default
        # use_bias_correction_kl: the completions were sampled from the old policy, not the current one)
        kl = (torch.exp(ref_logps - logps) - (ref_logps - logps) - 1) * ratio
        per_token = per_token + beta * kl
        terms["kl"] = kl
    return per_token, terms


def aggregate(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str, *, completions: float,
              tokens: float, max_completion_length: int) -> torch.Tensor:
    """This micro-batch's part of the update's loss: its sum divided by the update's counts (`completions`,
    `tokens`: the whole update's, or this micro-batch's own when it is the whole update)."""
    mask = mask.to(per_token.dtype)
    if loss_type == "grpo":
        per_completion = (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        return per_completion.sum() / max(completions, 1.0)
    if loss_type == "dr_grpo":
        return (per_token * mask).sum() / (max(completions, 1.0) * max_completion_length)
    return (per_token * mask).sum() / max(tokens, 1.0)  # bnpo, dapo


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)
