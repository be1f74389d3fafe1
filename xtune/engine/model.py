"""The Hugging Face causal LM as an mmengine model: batches in, a `loss` dict out.

mmengine's runners, DDP wrapper and DeepSpeed strategy all call `forward(**batch, mode='loss')`, so
this thin wrapper is the only place the engine meets the model. It also enforces the NaN policy,
because by the time a runner hook sees a non-finite loss the optimizer has already stepped on it.
"""

from __future__ import annotations

import torch
from mmengine.model import BaseModel

from xtune.errors import XtuneError


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
        self.skipped_batches = 0

    def init_weights(self) -> None:
        """Nothing to initialise: the weights come from the pretrained checkpoint (and peft's adapter init).
        mmengine's default would also choke on 4-bit packed weights."""

    def forward(self, input_ids, labels=None, attention_mask=None, position_ids=None, mode: str = "loss", **_):
        kwargs = {"input_ids": input_ids, "use_cache": False}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        if position_ids is not None:
            kwargs["position_ids"] = position_ids
        if mode == "tensor":
            return self.llm(**kwargs).logits
        if mode == "predict":
            return self.llm(**kwargs).logits.argmax(-1)
        out = self.llm(**kwargs, labels=labels)
        loss = out.loss
        if not torch.isfinite(loss.detach()).all():
            if self.on_nan == "stop":
                raise NonFiniteLossError(
                    f"the training loss is {loss.item()} (not finite); stopping instead of training on it",
                    hint="lower lr, check the data, or set --cfg-options on_nan=skip to skip such batches")
            self.skipped_batches += 1
            # A zero that still touches every trainable parameter, so DDP/DeepSpeed reductions stay aligned.
            loss = sum(((p.reshape(-1)[:1] * 0.0).nan_to_num(0.0, 0.0, 0.0).sum() for p in self.parameters() if p.requires_grad),
                       torch.zeros((), device=input_ids.device))
        return {"loss": loss}
