"""Turning a recipe's optimizer and schedule sections into mmengine configs once the data size is known.

Recipes count in optimizer *steps* (`max_steps`, `save_steps`, `log_interval`, `evaluation_freq`), as
users of XTuner, LLaMA-Factory and axolotl expect. mmengine counts *iterations*, one per micro-batch, and
accumulates `accumulative_counts` of them per optimizer step. This module does the conversion in one
place: iteration = step * accumulative_counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from xtune.errors import ConfigError


@dataclass(frozen=True)
class Schedule:
    """How long the run is, in both units."""

    accumulation: int
    max_iters: int  # micro-batches
    micro_batches_per_epoch: int

    @property
    def max_steps(self) -> int:
        return math.ceil(self.max_iters / self.accumulation)

    def iters(self, steps: int) -> int:
        return int(steps) * self.accumulation


def plan_schedule(cfg, dataset_len: int, world_size: int = 1) -> Schedule:
    """`train_cfg.max_steps > 0` wins; otherwise `max_epochs` passes over the data."""
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


def param_schedulers(sched_cfg: dict, schedule: Schedule) -> list[dict]:
    """`dict(type='cosine'|'linear'|'constant', warmup_ratio, eta_min)` -> mmengine schedulers (in iterations).

    Warm-up is linear from 1e-5 x lr, as XTuner's recipes do.
    """
    cfg = dict(sched_cfg or {})
    kind = cfg.pop("type", "cosine")
    warmup_ratio = float(cfg.pop("warmup_ratio", 0.0) or 0.0)
    eta_min = float(cfg.pop("eta_min", 0.0) or 0.0)
    if cfg:
        raise ConfigError(f"param_scheduler has unknown settings {sorted(cfg)}",
                          hint="accepted: type, warmup_ratio, eta_min")
    total = schedule.max_iters
    warmup = min(int(round(warmup_ratio * total)), total - 1) if total > 1 else 0
    # mmengine's LinearLR reaches its end factor at iteration end - 1; with end == 1 it never leaves
    # start_factor, and the chained cosine then anneals from 1e-5 x lr: the run would not learn.
    if warmup < 2:
        warmup = 0
    out = []
    if warmup > 0:
        out.append(dict(type="LinearLR", start_factor=1e-5, by_epoch=False, begin=0, end=warmup))
    if kind == "cosine":
        out.append(dict(type="CosineAnnealingLR", eta_min=eta_min, by_epoch=False, begin=warmup, end=total,
                        T_max=total - warmup))
    elif kind == "linear":
        out.append(dict(type="LinearLR", start_factor=1.0, end_factor=0.0, by_epoch=False, begin=warmup, end=total))
    elif kind == "constant":
        out.append(dict(type="ConstantLR", factor=1.0, by_epoch=False, begin=warmup, end=total))
    else:
        raise ConfigError(f"param_scheduler type {kind!r} is not one of cosine, linear, constant")
    return out


def resolve_precision(dtype) -> str:
    """optim_wrapper.dtype -> 'bfloat16' | 'float16' | 'float32'. 'auto': bf16 where the device has it."""
    import torch

    aliases = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", None: "float32", "auto": "auto"}
    name = aliases.get(dtype, dtype)
    if name == "auto":
        if torch.cuda.is_available():
            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return "bfloat16"
    if name not in ("bfloat16", "float16", "float32"):
        raise ConfigError(f"optim_wrapper.dtype={dtype!r} is not one of auto, bfloat16, float16, float32")
    if name == "float16" and not torch.cuda.is_available():
        raise ConfigError("optim_wrapper.dtype='float16' needs a CUDA GPU", hint="use 'auto' or 'bfloat16'")
    return name


def optim_wrapper_cfg(section: dict, *, deepspeed: bool) -> dict:
    """The mmengine optim wrapper for the recipe's `optim_wrapper` section.

    CPU bf16 uses the compat module's autocast wrapper (mmengine's AmpOptimWrapper refuses CPUs); with
    DeepSpeed, precision, clipping and accumulation move into the DeepSpeed config instead.
    """
    from xtune.engine.compat import register_cpu_autocast_wrapper

    section = dict(section)
    optimizer = dict(section.pop("optimizer"))
    clip = section.pop("clip_grad", None)
    acc = int(section.pop("accumulative_counts", 1) or 1)
    precision = resolve_precision(section.pop("dtype", "auto"))
    if section:
        raise ConfigError(f"optim_wrapper has unknown settings {sorted(section)}",
                          hint="accepted: optimizer, clip_grad, accumulative_counts, dtype")
    if isinstance(optimizer.get("betas"), list):
        optimizer["betas"] = tuple(optimizer["betas"])
    if deepspeed:
        return dict(type="DeepSpeedOptimWrapper", optimizer=optimizer)
    out = dict(optimizer=optimizer, accumulative_counts=acc)
    if clip and clip.get("max_norm"):
        out["clip_grad"] = dict(max_norm=float(clip["max_norm"]), error_if_nonfinite=False)
    import torch

    if precision == "float32":
        out["type"] = "OptimWrapper"
    elif torch.cuda.is_available():
        out.update(type="AmpOptimWrapper", dtype=precision)
        if precision == "float16":
            out["loss_scale"] = "dynamic"
    else:
        out.update(type=register_cpu_autocast_wrapper(), dtype=precision)
    return out
