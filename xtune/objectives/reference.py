"""The reference model of DPO, KTO and PPO without a second copy where one can be avoided.

With adapters (LoRA, QLoRA, DoRA ...) the reference is the same model with its adapters disabled. With full
(or freeze / bitfit) tuning it is a frozen copy taken before training, or log-probs precomputed in one pass
over the data before training (`precompute_ref_log_probs=True`, which also saves the reference forward of
every step with adapters). Precomputed values travel with the rows (`ref_logps`, one per sample).
"""

from __future__ import annotations

import contextlib
import copy

import torch

from xtune.objectives.logps import token_logps


def uses_adapters(llm) -> bool:
    return hasattr(llm, "disable_adapter") and hasattr(llm, "peft_config")


class Reference:
    """mode: 'adapters_off', 'copy' or 'precomputed' (then batches must carry `ref_logps`)."""

    def __init__(self, mode: str, model=None):
        self.mode, self.model = mode, model

    def describe(self) -> str:
        return {"adapters_off": "the policy with its adapters disabled", "copy": "a frozen copy of the model",
                "precomputed": "log-probs precomputed before training"}[self.mode]

    @contextlib.contextmanager
    def active(self, llm):
        """The reference model to run under no_grad: the policy with adapters off, or the frozen copy."""
        with torch.no_grad():
            if self.mode == "copy":
                device = next(llm.parameters()).device
                if next(self.model.parameters()).device != device:
                    self.model.to(device)
                yield self.model
            else:
                with llm.disable_adapter():
                    yield llm

    def sample_logps(self, llm, batch: dict) -> torch.Tensor:
        """(samples,) summed reference log-probs of every sample's answer tokens."""
        if batch.get("ref_logps") is not None:
            return batch["ref_logps"].to(torch.float32)
        if self.mode == "precomputed":
            raise RuntimeError("the batch has no ref_logps although the reference was precomputed")
        with self.active(llm) as model:
            return token_logps(model, batch).sums()


def make_reference(objective, llm) -> Reference:
    """The reference an objective's settings ask for, given the trainable model."""
    wanted = getattr(objective, "reference", "auto")
    if getattr(objective, "precompute_ref_log_probs", False):
        return Reference("precomputed")
    if wanted == "adapters_off" or (wanted == "auto" and uses_adapters(llm)):
        if not uses_adapters(llm):
            from xtune.errors import ConfigError

            raise ConfigError("objective reference='adapters_off' needs an adapter method (lora, qlora, "
                              "dora, ...)", hint="use reference='auto' or precompute_ref_log_probs=True")
        return Reference("adapters_off")
    frozen = copy.deepcopy(llm).eval()
    frozen.requires_grad_(False)
    return Reference("copy", frozen)


@torch.no_grad()
def precompute_ref_logps(dataset, llm, collator, batch_size: int):
    """`dataset` with a `ref_logps` column (one value per sample of each row) from `llm` as it is now (with
    its adapters disabled when it has them): the reference, computed once before training."""
    reference = Reference("adapters_off") if uses_adapters(llm) else Reference("copy", llm)
    was_training = llm.training
    llm.eval()
    values: list[float] = []
    try:
        for start in range(0, len(dataset), batch_size):
            rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            batch = {k: v.to(next(llm.parameters()).device) if hasattr(v, "to") else v
                     for k, v in collator(rows).items()}
            values += reference.sample_logps(llm, batch).tolist()
    finally:
        llm.train(was_training)
    from xtune.data.packing import sample_lengths

    column, at = [], 0
    for positions in dataset["position_ids"]:
        n = len(sample_lengths(positions))
        column.append(values[at:at + n])
        at += n
    return dataset.add_column("ref_logps", column)
