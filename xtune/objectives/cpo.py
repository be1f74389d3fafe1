"""`orpo` and `simpo`: preference losses without a reference model, on per-token average log-probs.

ORPO adds to the chosen answer's NLL a term on the log odds ratio of chosen over rejected; SimPO (TRL's
CPO with loss_type='simpo') is a sigmoid loss on the difference of average log-probs with a target margin
gamma, optionally plus the chosen NLL (CPO-SimPO, `cpo_alpha`). The formulas and metric names are TRL's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xtune.objectives.logps import pair_metrics, token_logps
from xtune.objectives.settings import positive
from xtune.objectives.units import Share, chosen_tokens, divide, local_share, sample_count


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, accurate on both sides of -log 2."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def chosen_nll(tokens, *, prompt_too: bool) -> torch.Tensor:
    """Negative log-likelihood summed over the chosen samples' tokens (answers only, or every token); the
    objective divides it by the update's count of them (`units`' 'chosen_tokens')."""
    chosen = tokens.sample % 2 == 0
    if not prompt_too:
        chosen = chosen & tokens.trained
    return -(tokens.logps * chosen).sum()


class ORPO:
    """beta: weight of the odds-ratio term (the paper's lambda); nll_on_prompt: the NLL covers the prompt
    tokens too, as TRL 1.16 computes it (xtune's default trains answers only, as for SFT)."""

    def __init__(self, beta: float = 0.1, nll_on_prompt: bool = False):
        self.beta = positive("orpo", "beta", beta)
        self.nll_on_prompt = bool(nll_on_prompt)

    def units(self, batch: dict) -> dict:
        return {"pairs": sample_count(batch) // 2,
                "chosen_tokens": chosen_tokens(batch, prompt_too=self.nll_on_prompt)}

    def loss(self, llm, batch: dict, reference=None, share: Share | None = None) -> dict:
        share = share or local_share(self.units(batch))
        tokens = token_logps(llm, batch, all_tokens=self.nll_on_prompt)
        means = tokens.means()
        chosen, rejected = means[0::2].float(), means[1::2].float()
        log_odds = (chosen - rejected) - (log1mexp(chosen) - log1mexp(rejected))
        ratio = F.logsigmoid(log_odds)
        nll_sum = chosen_nll(tokens, prompt_too=self.nll_on_prompt)
        nll = nll_sum / max(chosen_tokens(batch, prompt_too=self.nll_on_prompt), 1)  # logged: this batch's
        odds_term = divide(ratio.sum(), "pairs", share)
        return {"loss": divide(nll_sum, "chosen_tokens", share) - self.beta * odds_term,
                **pair_metrics(self.beta * chosen, self.beta * rejected, chosen, rejected),
                "nll": nll.detach(), "log_odds_ratio": ratio.mean().detach(),
                "log_odds_chosen": log_odds.mean().detach()}


class SimPO:
    """beta: reward scale; simpo_gamma: target reward margin; label_smoothing as in cDPO; cpo_alpha: weight of
    the chosen NLL (0: plain SimPO)."""

    def __init__(self, beta: float = 2.0, simpo_gamma: float = 1.0, label_smoothing: float = 0.0,
                 cpo_alpha: float = 0.0):
        self.beta = positive("simpo", "beta", beta)
        self.gamma = positive("simpo", "simpo_gamma", simpo_gamma, zero=True)
        self.label_smoothing = positive("simpo", "label_smoothing", label_smoothing, zero=True, below=0.5)
        self.cpo_alpha = positive("simpo", "cpo_alpha", cpo_alpha, zero=True)

    def units(self, batch: dict) -> dict:
        units = {"pairs": sample_count(batch) // 2}
        if self.cpo_alpha:
            units["chosen_tokens"] = chosen_tokens(batch, prompt_too=False)
        return units

    def loss(self, llm, batch: dict, reference=None, share: Share | None = None) -> dict:
        share = share or local_share(self.units(batch))
        tokens = token_logps(llm, batch)
        means = tokens.means()
        chosen, rejected = means[0::2], means[1::2]
        logits = chosen - rejected - self.gamma / self.beta
        losses = (-F.logsigmoid(self.beta * logits) * (1 - self.label_smoothing)
                  - F.logsigmoid(-self.beta * logits) * self.label_smoothing)
        out = {"loss": divide(losses.sum(), "pairs", share),
               **pair_metrics(self.beta * chosen, self.beta * rejected, chosen, rejected)}
        if self.cpo_alpha:
            nll_sum = chosen_nll(tokens, prompt_too=False)
            nll = nll_sum / max(chosen_tokens(batch, prompt_too=False), 1)
            out["loss"] = out["loss"] + self.cpo_alpha * divide(nll_sum, "chosen_tokens", share)
            out["nll"] = nll.detach()
        return out
