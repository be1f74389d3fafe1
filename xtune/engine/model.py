"""The Hugging Face model as an mmengine model: batches in, a `loss` dict (and the objective's metrics) out.

The training loop (`xtune.engine.loop`), through DDP or DeepSpeed when they wrap it, calls
`forward(**batch, mode='loss')`, so this thin wrapper is the only place the engine meets the model. The
loss is the recipe's objective (`xtune.objectives`: SFT by default, DPO, ORPO, ... for preference recipes;
PPO's batches are its rollout's mini-batches). The wrapper also enforces the NaN policy, because after
the loss has been returned the optimizer would step on it.
"""

from __future__ import annotations

import torch
from mmengine.model import BaseModel

from xtune.errors import XtuneError
from xtune.objectives.logps import IGNORE_INDEX, keeps_selected_logits, model_inputs  # noqa: F401
from xtune.objectives.sft import SFT, labelled_token_loss  # noqa: F401


class NonFiniteLossError(XtuneError):
    """The loss became NaN or infinite; training on would silently ruin the weights."""

    exit_code = 1


class CausalLMModel(BaseModel):
    """Wraps `llm` (a transformers or peft model). `on_nan` is 'stop' (raise) or 'skip' (no gradient).

    `objective` computes the loss (SFT when None); `reference` gives it reference log-probs; `heads` are
    trained modules beside the model (PPO's value head), saved in checkpoints but not exported."""

    def __init__(self, llm, on_nan: str = "stop", objective=None, reference=None, heads: dict | None = None):
        super().__init__()
        if on_nan not in ("stop", "skip"):
            raise ValueError(f"on_nan must be 'stop' or 'skip', got {on_nan!r}")
        self.llm = llm
        self.on_nan = on_nan
        self.objective = objective if objective is not None else SFT()
        self.reference = reference
        self.heads = torch.nn.ModuleDict(heads or {})
        self.skipped_batches = 0  # on_nan='skip': micro-batches that added no gradient (reported at the end)

    def init_weights(self) -> None:
        """Nothing to initialise: the weights come from the pretrained checkpoint (and peft's adapter init).
        mmengine's default would also choke on 4-bit packed weights."""

    def forward(self, mode: str = "loss", **batch):
        # `batch`: input_ids, labels, attention_mask, position_ids, and a vision-language batch's pixel inputs
        # (pixel_values, image_grid_thw, ...) or a preference batch's bookkeeping (sample_ids, ...);
        # `model_inputs` passes the model its own.
        if mode == "tensor":
            return self.llm(**model_inputs(batch)).logits
        if mode == "predict":
            return self.llm(**model_inputs(batch)).logits.argmax(-1)
        share = batch.pop("loss_share", None)  # the update's global unit counts (xtune.objectives.units)
        if share is not None:
            out = self.objective.loss(self.llm, batch, self.reference, share=share)
        else:
            out = self.objective.loss(self.llm, batch, self.reference)
        loss = out["loss"]
        if not torch.isfinite(loss.detach()).all():
            if self.on_nan == "stop":
                raise NonFiniteLossError(
                    f"the training loss is {loss.item()} (not finite); stopping instead of training on it",
                    hint="lower lr, check the data, or set --cfg-options on_nan=skip to skip such batches")
            self.skipped_batches += 1
            return {"loss": self.zero_loss(loss.device)}
        return out

    def zero_loss(self, device):
        """A zero that still touches every trainable parameter, so DDP/DeepSpeed reductions stay aligned."""
        return sum(((p.reshape(-1)[:1] * 0.0).nan_to_num(0.0, 0.0, 0.0).sum()
                    for p in self.parameters() if p.requires_grad), torch.zeros((), device=device))
