"""`dpo`: Direct Preference Optimization, with the sigmoid (cDPO label smoothing), IPO and hinge losses.

The implicit reward of an answer is beta x (its log-prob under the policy - under the reference), summed
over its tokens; the loss pushes the chosen answer's reward above the rejected one's. IPO compares the
per-token averages instead (as TRL 1.16 does, following its authors). Metrics are TRL's names.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xtune.errors import ConfigError
from xtune.objectives.logps import pair_metrics, token_logps
from xtune.objectives.settings import choose, positive
from xtune.objectives.units import Share, divide, local_share, sample_count

LOSS_TYPES = ("sigmoid", "ipo", "hinge")
REFERENCES = ("auto", "adapters_off", "copy")


class DPO:
    """beta: strength of the pull towards the reference; label_smoothing: the probability that a label is
    flipped (conservative DPO, sigmoid loss only); reference: 'auto' (adapters off with peft, else a frozen
    copy), or set precompute_ref_log_probs to compute them once before training."""

    def __init__(self, beta: float = 0.1, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
                 reference: str = "auto", precompute_ref_log_probs: bool = False):
        self.beta = positive("dpo", "beta", beta)
        choose("dpo", "loss_type", loss_type, LOSS_TYPES)
        choose("dpo", "reference", reference, REFERENCES)
        self.label_smoothing = positive("dpo", "label_smoothing", label_smoothing, zero=True, below=0.5)
        if self.label_smoothing and loss_type != "sigmoid":
            raise ConfigError(f"objective 'dpo': label_smoothing applies to loss_type='sigmoid', not "
                              f"{loss_type!r}", hint="set label_smoothing=0.0")
        self.loss_type, self.reference = loss_type, reference
        self.precompute_ref_log_probs = bool(precompute_ref_log_probs)

    def units(self, batch: dict) -> dict:
        return {"pairs": sample_count(batch) // 2}

    def loss(self, llm, batch: dict, reference, share: Share | None = None) -> dict:
        share = share or local_share(self.units(batch))
        tokens = token_logps(llm, batch)
        logps, ref = tokens.sums(), reference.sample_logps(llm, batch)
        chosen, rejected = logps[0::2], logps[1::2]
        chosen_ratio, rejected_ratio = chosen - ref[0::2], rejected - ref[1::2]
        delta = chosen_ratio - rejected_ratio
        if self.loss_type == "sigmoid":
            losses = (-(1 - self.label_smoothing) * F.logsigmoid(self.beta * delta)
                      - self.label_smoothing * F.logsigmoid(-self.beta * delta))
        elif self.loss_type == "hinge":
            losses = torch.relu(1 - self.beta * delta)
        else:
            counts = tokens.counts().clamp(min=1.0)
            per_token = chosen_ratio / counts[0::2] - rejected_ratio / counts[1::2]
            losses = (per_token - 1 / (2 * self.beta)) ** 2
        return {"loss": divide(losses.sum(), "pairs", share),
                **pair_metrics(self.beta * chosen_ratio, self.beta * rejected_ratio, chosen, rejected)}
