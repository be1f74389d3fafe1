"""mmengine runner hooks (per-step callbacks; not pluggy plugin hooks) that make a run observable.

- `DatasetInfoHook`: at the start, the data set's size and one rendered sample with its trained spans.
- `ThroughputHook`: tokens/s and estimated TFLOPs per optimizer step, into the log line and scalars.
- `LossHistoryHook`: the loss of every optimizer step (kept across resumes inside the checkpoints), written
  to `loss_history.json` and plotted to `training_loss.png` at the end.
- `ValidationLossHook`: mean loss on a held-out split every N steps.

All counts are in optimizer steps; `xtune.schedule.Schedule` says which iteration (micro-batch) ends one.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch
from mmengine.hooks import Hook

from xtune.fileio import atomic_write_text
from xtune.schedule import Schedule, unwrap_model


def _is_rank0() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


class DatasetInfoHook(Hook):
    """Log the data set once before training, so a wrong template or label mask is seen at step 0."""

    def __init__(self, dataset, tokenizer, describe=None):
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.describe = describe  # the data pipeline's describe(dataset, tokenizer) -> str, when it has one

    def before_train(self, runner) -> None:
        runner.logger.info(f"training data: {len(self.dataset)} rows")
        if self.describe is None or len(self.dataset) == 0:
            return
        try:
            runner.logger.info(self.describe(self.dataset, self.tokenizer))
        except Exception as exc:  # information only: never stop a run for it
            runner.logger.warning(f"could not render a data sample: {type(exc).__name__}: {exc}")


class ThroughputHook(Hook):
    """tokens/s (all processes) and model TFLOPs per optimizer step.

    FLOPs per token follow the usual estimate: forward 2N, backward 4N for trained weights and 2N for
    frozen ones (activation gradients only), plus another forward with gradient checkpointing.
    """

    priority = "ABOVE_NORMAL"  # before LoggerHook, so the values appear in the same log line

    def __init__(self, schedule: Schedule, total_params: int, trainable_params: int,
                 gradient_checkpointing: bool = False, world_size: int = 1):
        self.schedule = schedule
        self.world_size = world_size
        frozen = total_params - trainable_params
        self.flops_per_token = 6 * trainable_params + 4 * frozen + (2 * total_params
                                                                    if gradient_checkpointing else 0)
        self._tokens = 0
        self._start: float | None = None

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if isinstance(data_batch, dict) and "input_ids" in data_batch:
            mask = data_batch.get("attention_mask")
            self._tokens += int(mask.sum()) if mask is not None else int(data_batch["input_ids"].numel())
        if self.schedule.step_end(runner.iter + 1) is None or self._start is None:
            return
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        tokens = self._tokens * self.world_size
        runner.message_hub.update_scalar("train/tokens_per_s", tokens / elapsed)
        runner.message_hub.update_scalar("train/tflops", self.flops_per_token * tokens / elapsed / 1e12)
        self._tokens, self._start = 0, None


class LossHistoryHook(Hook):
    """Every optimizer step's mean loss and lr; survives resume by riding along in the checkpoints."""

    priority = "BELOW_NORMAL"

    def __init__(self, schedule: Schedule, plot: bool = True):
        self.schedule = schedule
        self.plot = plot
        self.history: list[dict] = []
        self.val_history: list[dict] = []
        self._losses: list[float] = []

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if outputs and "loss" in outputs:
            loss = outputs["loss"]
            self._losses.append(float(loss.detach()) if hasattr(loss, "detach") else float(loss))
        step = self.schedule.step_end(runner.iter + 1)
        if step is None or not self._losses:
            return
        lr = runner.optim_wrapper.get_lr()
        lr = next(iter(lr.values()))[0] if isinstance(lr, dict) else None
        self.history.append({"step": step, "loss": sum(self._losses) / len(self._losses), "lr": lr})
        self._losses = []

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint["xtune_loss_history"] = {"train": self.history, "val": self.val_history}

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        saved = checkpoint.get("xtune_loss_history") or {}
        self.history = list(saved.get("train", []))
        self.val_history = list(saved.get("val", []))

    def after_train(self, runner) -> None:
        skipped = getattr(unwrap_model(runner.model), "skipped_batches", 0)
        if skipped:
            runner.logger.warning(f"on_nan=skip: {skipped} micro-batches had a non-finite loss and "
                                  "added no gradient")
        if not _is_rank0():
            return
        work_dir = Path(runner.work_dir)
        data = {"train": self.history, "val": self.val_history, "skipped_batches": skipped}
        atomic_write_text(work_dir / "loss_history.json", json.dumps(data, indent=1))
        if self.plot and self.history:
            from xtune.engine.plot import plot_loss

            try:
                path = plot_loss(self.history, self.val_history, work_dir / "training_loss.png")
                runner.logger.info(f"loss curve: {path}")
            except Exception as exc:  # a picture is not worth failing a finished run for
                runner.logger.warning(f"could not plot the loss: {type(exc).__name__}: {exc}")


class ValidationLossHook(Hook):
    """Mean loss over a held-out dataloader every `every` optimizer steps and at the end."""

    priority = "LOW"

    def __init__(self, dataloader, every: int, schedule: Schedule, history: LossHistoryHook | None = None):
        self.dataloader = dataloader
        self.every = every
        self.schedule = schedule
        self.history = history

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        step = self.schedule.step_end(runner.iter + 1)
        if step is None:
            return
        if (self.every > 0 and step % self.every == 0) or step == self.schedule.max_steps:
            loss = self.evaluate(runner)
            runner.message_hub.update_scalar("train/val_loss", loss)
            runner.logger.info(f"step {step}: validation loss {loss:.4f}")
            if self.history is not None:
                self.history.val_history.append({"step": step, "loss": loss})

    @torch.no_grad()
    def evaluate(self, runner) -> float:
        model = unwrap_model(runner.model)
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        try:
            for batch in self.dataloader:
                with runner.optim_wrapper.optim_context(model):
                    data = model.data_preprocessor(batch, False)
                    loss = model(**data, mode="loss")["loss"]
                n = int((data["labels"][:, 1:] != -100).sum())
                total += float(loss) * n
                count += n
        finally:
            model.train(was_training)
        return total / count if count else math.nan
