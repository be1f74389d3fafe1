"""The Hugging Face causal LM as an mmengine model: batches in, a `loss` dict out.

mmengine's runners, DDP wrapper and DeepSpeed strategy all call `forward(**batch, mode='loss')`, so
this thin wrapper is the only place the engine meets the model. It also enforces the NaN policy,
because by the time a runner hook sees a non-finite loss the optimizer has already stepped on it.

The loss runs the output layer only where a label follows (transformers' `logits_to_keep` mask): with a
49k-token vocabulary the output layer and its log-softmax are a fifth of a small model's step, and the
prompt positions (system prompt, question) need neither. It is the same token-mean cross-entropy.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel

from xtune.errors import XtuneError

IGNORE_INDEX = -100


class NonFiniteLossError(XtuneError):
    """The loss became NaN or infinite; training on would silently ruin the weights."""

    exit_code = 1


class CausalLMModel(BaseModel):
    """Wraps `llm` (a transformers or peft model). `on_nan` is 'stop' (raise) or 'skip' (no gradient)."""

    def __init__(self, llm, on_nan: str = "stop"):
        super().__init__()
        if on_nan not in ("stop", "skip"):
            raise ValueError(f"on_nan must be 'stop' or 'skip', got {on_nan!r}")
        self.llm = llm
        self.on_nan = on_nan
        self.labelled_only = keeps_selected_logits(llm)
        self.skipped_batches = 0  # on_nan='skip': micro-batches that added no gradient (reported at the end)

    def init_weights(self) -> None:
        """Nothing to initialise: the weights come from the pretrained checkpoint (and peft's adapter init).
        mmengine's default would also choke on 4-bit packed weights."""

    def forward(self, input_ids, labels=None, attention_mask=None, position_ids=None, mode: str = "loss",
                **images):
        # `images`: a vision-language batch's pixel inputs (pixel_values, image_grid_thw, ...), passed on
        kwargs = {"input_ids": input_ids, "use_cache": False, **images}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        if mode == "tensor":
            return self.llm(**kwargs).logits
        if mode == "predict":
            return self.llm(**kwargs).logits.argmax(-1)
        loss = labelled_token_loss(self.llm, labels, kwargs) if self.labelled_only else \
            self.llm(**kwargs, labels=labels).loss
        if not torch.isfinite(loss.detach()).all():
            if self.on_nan == "stop":
                raise NonFiniteLossError(
                    f"the training loss is {loss.item()} (not finite); stopping instead of training on it",
                    hint="lower lr, check the data, or set --cfg-options on_nan=skip to skip such batches")
            self.skipped_batches += 1
            loss = self.zero_loss(input_ids.device)
        return {"loss": loss}

    def zero_loss(self, device):
        """A zero that still touches every trainable parameter, so DDP/DeepSpeed reductions stay aligned."""
        return sum(((p.reshape(-1)[:1] * 0.0).nan_to_num(0.0, 0.0, 0.0).sum()
                    for p in self.parameters() if p.requires_grad), torch.zeros((), device=device))


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


def labelled_token_loss(llm, labels, model_kwargs: dict):
    """Mean cross-entropy over the tokens that carry a label, computing logits only at the positions
    that predict them (position t predicts label t + 1)."""
    predicts = labels[:, 1:] != IGNORE_INDEX
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = predicts
    if not bool(predicts.any()):  # nothing to learn in this batch; still a graph for the optimizer step
        logits = llm(**model_kwargs, logits_to_keep=1).logits
        return logits.sum() * 0.0
    logits = llm(**model_kwargs, logits_to_keep=keep).logits
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels[:, 1:][predicts])
