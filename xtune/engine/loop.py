"""xtune's training loop. mmengine's Runner runs it; one iteration is one optimizer step.

`run_step` is the whole step, top to bottom: take the step's micro-batches; let the objective turn them
into updates (SFT, DPO ...: one; PPO: a rollout, then several); for each update, every micro-batch's loss
under the run's precision, backward (scaled by the number of micro-batches; DDP syncs gradients with the
last one, DeepSpeed is told that this is where the accumulation ends), then clip, step and zero; then the
learning-rate schedule advances, the step is logged, and, when due, the validation loss, sample chats and a
checkpoint follow. This file is the only place that decides where an optimizer step ends: `runner.iter`
counts optimizer steps, so mmengine's logger, the checkpoint meta and `--resume` count them too.

From the runner come the optimizer wrapper (precision, clipping), the parameter schedulers, the
distributed setup, logging to file and visualizer (the step's `outputs` become its scalars) and
checkpoint save / resume. What the loop needs beside them arrives as `runner.parts` (`LoopParts`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from mmengine.registry import LOOPS
from mmengine.runner.base_loop import BaseLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator

from xtune.data.tokenize import IGNORE_INDEX
from xtune.engine import processes
from xtune.engine.stopping import stop_on_signals, stopped
from xtune.schedule import Schedule, unwrap_model

log = logging.getLogger("xtune")


@dataclass(frozen=True)
class LoopParts:
    """What the loop uses beside mmengine's runner (`xtune.engine.runner_setup` assembles it)."""

    schedule: Schedule
    saver: Any  # engine.checkpoints.CheckpointSaver
    save_every: int  # optimizer steps (0: only at the end)
    log_every: int
    chats: Any = None  # engine.samples.SampleChats, or None
    chat_every: int = 0
    validation: Any = None  # a dataloader of held-out rows, or None
    validate_every: int = 0
    flops_per_token: float = 0.0
    world_size: int = 1
    deepspeed: bool = False  # the runner's model is DeepSpeed's engine (behind mmengine's wrapper)
    sequence: Any = None  # engine.sequence_parallel.SequenceParallel: batches are cut into its shards
    evaluation: Any = None  # engine.evaluation.RunEvaluation (generation metrics on a test file), or None
    evaluate_every: int = 0


@LOOPS.register_module()
class XtuneTrainLoop(BaseLoop):
    def __init__(self, runner, dataloader):
        super().__init__(runner, dataloader)
        self.parts: LoopParts = runner.parts
        self.schedule = self.parts.schedule
        self._iter, self._epoch = 0, 0
        self.stop_signal = None  # SIGTERM / Ctrl-C: save at the end of this step, then stop
        self.last_saved = None  # the newest checkpoint's name, for the line a second Ctrl-C prints
        self.peak_memory: list[float] = []  # MiB per process, measured when training ends
        self.micro_batches = _InfiniteDataloaderIterator(self.dataloader)

    @property
    def max_iters(self) -> int:
        return self.schedule.max_steps

    @property
    def max_epochs(self) -> int:
        return 1

    @property
    def iter(self) -> int:
        return self._iter

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def model(self):
        """xtune's model wrapper (`engine.model.CausalLMModel`) under any DDP / DeepSpeed wrapper."""
        return unwrap_model(self.runner.model)

    def run(self):
        self.runner.call_hook("before_train")
        self.runner.call_hook("before_train_epoch")
        for _ in range(self.schedule.micro_batches_before(self._iter + 1)):  # resumed: skip what trained
            next(self.micro_batches)
        if self._iter == 0:
            self.sample_chats("before training")
        with stop_on_signals(self):
            while self._iter < self.max_iters:
                self.run_step()
        self.peak_memory = processes.peak_memory(self.parts.world_size)  # to loss_history.json
        self.runner.call_hook("after_train_epoch")
        self.sample_chats("after training")
        self.runner.call_hook("after_train")
        return self.runner.model

    def run_step(self) -> None:
        """Optimizer step `runner.iter + 1`."""
        step = self._iter + 1
        # before the batches are drawn: a resumed run's RNG states come back here, and drawing the batches
        # may itself use random numbers (a new epoch's workers), as it did in the uninterrupted run
        self.runner.call_hook("before_train_iter", batch_idx=self._iter)
        started = time.perf_counter()
        batches = [next(self.micro_batches) for _ in range(self.schedule.micro_batches(step))]
        if self.parts.sequence is not None:  # this process's part of every row
            batches = [self.parts.sequence.shard(batch) for batch in batches]
        self.runner.model.train()
        updates = self.updates(batches)
        for update in updates:
            outputs = self.update_params(update)
        outputs.update(getattr(updates, "metrics", {}), lr=self.lr())
        self.step_schedulers()
        outputs.update(self.throughput(batches, time.perf_counter() - started))
        if self.due(step, self.parts.validate_every) and self.parts.validation is not None:
            outputs["val_loss"] = self.validation_loss()
        if self.due(step, self.parts.evaluate_every) and self.parts.evaluation is not None:
            outputs.update(self.parts.evaluation(self.model.llm, step))  # eval_bleu-4, eval_rouge-l ...
        self.runner.call_hook("after_train_iter", batch_idx=self._iter, data_batch=batches, outputs=outputs)
        if self.due(step, self.parts.log_every):
            self.report(step, outputs)
        if self.parts.chat_every and step % self.parts.chat_every == 0 and step < self.max_iters:
            self.sample_chats(f"step {step}")
        # a signal may reach the processes in different steps: they stop together, after the same one
        stop = int(self.across_processes(float(self.stop_signal or 0), op="max"))
        if self.due(step, self.parts.save_every) or stop:
            self.last_saved = self.parts.saver.save(self.runner, step)
        self._iter = step
        if stop:
            raise stopped(stop, step, self.last_saved)

    def due(self, step: int, every: int) -> bool:
        """Every `every` optimizer steps (0: never) and at the last one."""
        return (every > 0 and step % every == 0) or step == self.max_iters

    # -------------------------------------------------------------------------------- one update
    def updates(self, batches: list) -> list:
        """The objective's updates for this step's micro-batches: one (all of them) unless the objective has
        a phase before its gradient steps (`updates(model, batches)`, e.g. PPO's rollout)."""
        objective = self.model.objective
        return objective.updates(self.model, batches) if hasattr(objective, "updates") else [batches]

    def update_params(self, batches: list) -> dict:
        """One optimizer update: each micro-batch's loss and backward, then clip, step and zero.

        An objective that counts its units (`xtune.objectives.units`: tokens, pairs ...) divides each
        micro-batch's sum by the count of the whole update, every micro-batch of every process, so the
        gradient is that of the global batch's mean however the batch was split; processes average their
        gradients, so each backward is scaled by their number. An objective without units gives a mean per
        micro-batch, weighted 1 / micro-batches."""
        share = self.global_share(batches)
        scale = self.parts.world_size if share is not None else 1.0 / len(batches)
        logs = []
        for i, batch in enumerate(batches):
            with self.accumulating(last=i == len(batches) - 1):
                loss, log_vars = self.loss(batch, share)
                self.backward(loss * scale)
            logs.append({k: _number(v) for k, v in log_vars.items()})
        self.optimizer_step()
        out = {k: sum(v[k] for v in logs) / len(logs) for k in logs[0]}
        # the logged loss is the global batch's: shares add up to it, per-micro-batch means average to it
        loss = sum(v["loss"] for v in logs) if share is not None else out["loss"]
        out["loss"] = self.across_processes(loss, op="sum" if share is not None else "mean")
        if share is not None:  # what the step trained on, all processes: global_tokens, global_pairs ...
            out.update({f"global_{unit}": count for unit, count in share.totals.items()})
        return out

    def global_share(self, batches: list):
        """The update's unit counts summed over its micro-batches and over the processes, or None."""
        from xtune.objectives.units import Share

        objective = self.model.objective
        if not hasattr(objective, "units"):
            return None
        counts = [objective.units(batch) for batch in batches]
        keys = sorted(counts[0])  # the same on every process: they follow from the objective's settings
        totals = torch.tensor([float(sum(c.get(k, 0) for c in counts)) for k in keys], dtype=torch.float64)
        return Share(dict(zip(keys, self.across_processes(totals).tolist(), strict=True)))

    def across_processes(self, value, op: str = "sum"):
        return processes.reduce(value, self.parts.world_size, op)

    def loss(self, batch, share=None) -> tuple[torch.Tensor, dict]:
        """(the objective's loss, its logged values) of one micro-batch, in the run's precision."""
        data = self.model.data_preprocessor(batch, True)
        if share is not None:
            data["loss_share"] = share
        wrapper = self.runner.model
        if self.deepspeed:  # DeepSpeed casts and scales itself; mmengine's wrapper hides its engine
            return self.model.parse_losses(wrapper.model(**data, mode="loss"))
        with self.runner.optim_wrapper.optim_context(self.model):  # autocast (CPU bf16, CUDA AMP)
            return self.model.parse_losses(wrapper(**data, mode="loss"))

    @contextlib.contextmanager
    def accumulating(self, last: bool):
        """Gradients are reduced across processes once per update, with its last micro-batch."""
        wrapper = self.runner.model
        if self.deepspeed:
            wrapper.set_gradient_accumulation_boundary(last)
            yield
        elif not last and hasattr(wrapper, "no_sync"):  # DDP
            with wrapper.no_sync():
                yield
        else:
            yield

    def backward(self, loss: torch.Tensor) -> None:
        if self.deepspeed:
            self.runner.model.backward(loss, scale_wrt_gas=False)  # scaled here, by this update's size
        else:
            self.runner.optim_wrapper.backward(loss)

    def optimizer_step(self) -> None:
        """Clip, step and zero (DeepSpeed does all three in its `step`, at the boundary set above)."""
        if self.deepspeed:
            self.runner.model.step()
        else:
            self.runner.optim_wrapper.step()
            self.runner.optim_wrapper.zero_grad()

    @property
    def deepspeed(self) -> bool:
        return self.parts.deepspeed

    def lr(self) -> float:
        """The learning rate this step ran at (of the first parameter group)."""
        return float(self.runner.optim_wrapper.param_groups[0]["lr"])

    def step_schedulers(self) -> None:
        """The learning-rate schedule advances once per optimizer step."""
        schedulers = self.runner.param_schedulers or []
        for group in (schedulers.values() if isinstance(schedulers, dict) else [schedulers]):
            for scheduler in group:
                scheduler.step()

    # -------------------------------------------------------------------------------- around the step
    def throughput(self, batches: list, seconds: float) -> dict:
        """Tokens/s of all processes and model TFLOP/s (`flops_per_token`: 6N trained + 4N frozen ...)."""
        tokens = 0
        for batch in batches:
            if isinstance(batch, dict) and "input_ids" in batch:
                mask = batch.get("attention_mask")
                tokens += int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
        tokens *= self.parts.world_size
        seconds = max(seconds, 1e-9)
        return {"tokens_per_s": tokens / seconds,
                "tflops": self.parts.flops_per_token * tokens / seconds / 1e12}

    @torch.no_grad()
    def validation_loss(self) -> float:
        """Mean loss per labelled token over the held-out rows."""
        model = self.model
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        try:
            for batch in self.parts.validation:
                loss, _ = self.loss(batch)
                n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
                total, count = total + float(loss) * n, count + n
        finally:
            model.train(was_training)
        return total / count if count else math.nan

    def sample_chats(self, label: str) -> None:
        if self.parts.chats is not None:
            self.parts.chats(self.model.llm, label)

    def report(self, step: int, outputs: dict) -> None:
        """The console's progress line (mmengine's fuller line goes to the log file)."""
        extra = f", validation loss {outputs['val_loss']:.4f}" if "val_loss" in outputs else ""
        log.info(f"step {step}/{self.max_iters}: loss {outputs.get('loss', math.nan):.4f}, "
                 f"lr {outputs['lr']:.3g}, "
                 f"{outputs['tokens_per_s']:.0f} tokens/s{extra}")


def _number(value) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
