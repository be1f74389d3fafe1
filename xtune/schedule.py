"""Counting a run in optimizer steps, and reaching the trained model through its wrappers.

Recipes count in optimizer *steps* (`max_steps`, `save_steps`, `log_interval`, `evaluation_freq`, the
learning-rate schedule), as users of XTuner, LLaMA-Factory and axolotl expect, and so does xtune's training
loop (`xtune.engine.loop`): one iteration of it is one optimizer step over `accumulation` micro-batches (the
last step takes what is left when an epoch-based run does not divide evenly). `Schedule` says how long the
run is and how many micro-batches each step takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xtune.errors import ConfigError


@dataclass(frozen=True)
class Schedule:
    """How long the run is, in both units, and where each optimizer step ends."""

    accumulation: int
    max_iters: int  # micro-batches
    micro_batches_per_epoch: int = 0

    @property
    def max_steps(self) -> int:
        return math.ceil(self.max_iters / self.accumulation)

    def micro_batches(self, step: int) -> int:
        """How many micro-batches optimizer step number `step` (1-based) accumulates."""
        return min(self.accumulation, self.max_iters - (int(step) - 1) * self.accumulation)

    def micro_batches_before(self, step: int) -> int:
        """Micro-batches trained by the steps before `step` (1-based): what a resumed run skips."""
        return min(self.max_iters, (int(step) - 1) * self.accumulation)

    def steps_done(self, iters_done: int) -> int:
        """Optimizer steps completed after `iters_done` micro-batches (a short last group counts): reads the
        iteration count of checkpoints written before the loop counted in steps."""
        return math.ceil(int(iters_done) / self.accumulation)


def plan_schedule(training, dataset_len: int, world_size: int = 1) -> Schedule:
    """The run's length from its plan (`xtune.plan.TrainingPlan`): `max_steps > 0` wins, else `max_epochs`
    passes over the data."""
    batch, acc = training.batch_size, training.accumulation
    per_epoch = max(1, math.ceil(dataset_len / (batch * world_size)))
    if training.max_steps > 0:
        max_iters = training.max_steps * acc
    else:
        epochs = training.max_epochs
        if epochs <= 0:
            raise ConfigError("train_cfg needs max_steps > 0 or max_epochs > 0")
        max_iters = math.ceil(per_epoch * epochs)
    return Schedule(accumulation=acc, max_iters=max_iters, micro_batches_per_epoch=per_epoch)


def unwrap_model(model):
    """The innermost model under DDP / DeepSpeed wrappers (each keeps the wrapped one as `.module`)."""
    while hasattr(model, "module"):
        model = model.module
    return model
