"""Counting a run in optimizer steps, and reaching the trained model through its wrappers.

Recipes count in optimizer *steps* (`max_steps`, `save_steps`, `log_interval`, `evaluation_freq`, the
learning-rate schedule), as users of XTuner, LLaMA-Factory and axolotl expect. mmengine counts
*iterations*, one per micro-batch, and steps the optimizer once per `accumulative_counts` of them (and at
the last iteration, for a short final group). `Schedule` is the one place that converts between the two;
every runner hook, the checkpoint names and the exports ask it where a step ends.
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

    def iters(self, steps: int) -> int:
        return int(steps) * self.accumulation

    def steps_done(self, iters_done: int) -> int:
        """Optimizer steps completed after `iters_done` micro-batches (a short last group counts)."""
        return math.ceil(int(iters_done) / self.accumulation)

    def step_end(self, iters_done: int) -> int | None:
        """The optimizer step that micro-batch number `iters_done` (1-based) completes, else None."""
        if iters_done % self.accumulation and iters_done != self.max_iters:
            return None
        return self.steps_done(iters_done)


def plan_schedule(cfg, dataset_len: int, world_size: int = 1) -> Schedule:
    """The recipe's run length: `train_cfg.max_steps > 0` wins, else `max_epochs` passes over the data."""
    batch = int(cfg.train_dataloader.batch_size)
    acc = int(cfg.optim_wrapper.get("accumulative_counts", 1) or 1)
    per_epoch = max(1, math.ceil(dataset_len / (batch * world_size)))
    max_steps = int(cfg.train_cfg.get("max_steps", 0) or 0)
    if max_steps > 0:
        max_iters = max_steps * acc
    else:
        epochs = cfg.train_cfg.get("max_epochs", 0) or 0
        if epochs <= 0:
            raise ConfigError("train_cfg needs max_steps > 0 or max_epochs > 0")
        max_iters = math.ceil(per_epoch * epochs)
    return Schedule(accumulation=acc, max_iters=max_iters, micro_batches_per_epoch=per_epoch)


def unwrap_model(model):
    """The innermost model under DDP / DeepSpeed wrappers (each keeps the wrapped one as `.module`)."""
    while hasattr(model, "module"):
        model = model.module
    return model
