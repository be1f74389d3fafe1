"""`kto`: Kahneman-Tversky Optimization on unpaired answers judged desirable or not.

Each unit of the batch is (prompt + completion, prompt + another record's completion); the second gives the
KL estimate z0 = mean(policy - reference log-prob), detached and clamped at 0 (averaged over all processes),
and each completion is pushed above (desirable) or below (undesirable) it: 1 - sigmoid(beta (r - z0)) resp.
1 - sigmoid(beta (z0 - r)) with r its log ratio, weighted and averaged over the units. TRL's KTO formulas.
"""

from __future__ import annotations

import torch

from xtune.objectives.logps import token_logps
from xtune.objectives.settings import positive
from xtune.objectives.units import Share, divide, local_share, sample_count


def _mean_over_processes(value: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
        value = value / dist.get_world_size()
    return value


class KTO:
    """beta as in DPO; desirable_weight / undesirable_weight balance the two kinds of answer."""

    def __init__(self, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0,
                 reference: str = "auto", precompute_ref_log_probs: bool = False):
        from xtune.objectives.dpo import REFERENCES
        from xtune.objectives.settings import choose

        self.beta = positive("kto", "beta", beta)
        self.desirable_weight = positive("kto", "desirable_weight", desirable_weight)
        self.undesirable_weight = positive("kto", "undesirable_weight", undesirable_weight)
        choose("kto", "reference", reference, REFERENCES)
        self.reference, self.precompute_ref_log_probs = reference, bool(precompute_ref_log_probs)

    def units(self, batch: dict) -> dict:
        return {"completions": sample_count(batch) // 2}  # each with its KL partner

    def loss(self, llm, batch: dict, reference, share: Share | None = None) -> dict:
        share = share or local_share(self.units(batch))
        logps = token_logps(llm, batch).sums()
        ratios = logps - reference.sample_logps(llm, batch)
        kl = _mean_over_processes(ratios[1::2].detach().mean()).clamp(min=0)
        ratio, good = ratios[0::2], batch["unit_labels"].bool()
        losses = torch.where(good, self.desirable_weight * (1 - torch.sigmoid(self.beta * (ratio - kl))),
                             self.undesirable_weight * (1 - torch.sigmoid(self.beta * (kl - ratio))))
        out = {"loss": divide(losses.sum(), "completions", share), "kl": kl.detach()}
        rewards, completion = (self.beta * ratio).detach(), logps[0::2].detach()
        for name, chosen in (("chosen", good), ("rejected", ~good)):
            if chosen.any():
                out[f"rewards/{name}"] = rewards[chosen].mean()
                out[f"logps/{name}"] = completion[chosen].mean()
        if good.any() and (~good).any():
            out["rewards/margins"] = out["rewards/chosen"] - out["rewards/rejected"]
        return out
