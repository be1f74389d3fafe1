"""`reward`: a reward model, trained with the Bradley-Terry loss on a scalar head, and scoring with it.

The model is `AutoModelForSequenceClassification(num_labels=1)` (built by `xtune.models.build`); a sample's
reward is the head's output at its last token. Scores are read from the backbone's hidden states at each
sample's end rather than from the model's own pooling, so packed rows (several samples each) work, and
`score_conversations` renders a conversation exactly as training rendered it, for `xtune reward` and PPO.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xtune.objectives.logps import model_inputs, pair_metrics, sample_ends
from xtune.objectives.settings import positive
from xtune.objectives.units import Share, divide, local_share, sample_count


def sample_scores(model, batch: dict) -> torch.Tensor:
    """(samples,) the scalar head at the last token of every sample of the batch."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(base, base.base_model_prefix)
    hidden = backbone(**model_inputs(batch)).last_hidden_state
    rows, cols = sample_ends(batch)
    return base.score(hidden[rows, cols]).squeeze(-1).float()


class Reward:
    """center_rewards_coefficient: weight of TRL's penalty mean((r_chosen + r_rejected)^2), which keeps the
    rewards centred on 0 (0: off)."""

    def __init__(self, center_rewards_coefficient: float = 0.0):
        self.center = positive("reward", "center_rewards_coefficient", center_rewards_coefficient or 0.0,
                               zero=True)

    def units(self, batch: dict) -> dict:
        return {"pairs": sample_count(batch) // 2}

    def loss(self, model, batch: dict, reference=None, share: Share | None = None) -> dict:
        share = share or local_share(self.units(batch))
        scores = sample_scores(model, batch)
        chosen, rejected = scores[0::2], scores[1::2]
        loss = divide(-F.logsigmoid(chosen - rejected).sum(), "pairs", share)
        if self.center:
            loss = loss + self.center * divide(((chosen + rejected) ** 2).sum(), "pairs", share)
        return {"loss": loss, **pair_metrics(chosen, rejected)}


@torch.no_grad()
def score_conversations(model, tokenizer, template, conversations: list[list[dict]], *, registry,
                        batch_size: int = 8) -> list[float]:
    """The reward of each conversation (its last message is the judged answer), rendered by `template` with
    the tokenizer's special tokens as the reward model was trained."""
    from xtune.templates import render_text, tokenizer_tokens

    tokens = tokenizer_tokens(tokenizer)
    texts = [render_text(template, conv, registry=registry, **tokens) for conv in conversations]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start:start + batch_size]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(chunk):
            ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
        out += sample_scores(model, {"input_ids": ids.to(device), "attention_mask": mask.to(device)}).tolist()
    return out
