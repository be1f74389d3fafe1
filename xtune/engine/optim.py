"""The recipe's optimizer and schedule sections as mmengine configs, once the run length is known.

The learning-rate schedule counts *optimizer steps*: warm-up and decay are laid out over
`schedule.max_steps`, and the training loop (`xtune.engine.loop`) advances the schedulers once per
optimizer step (advanced every micro-batch, as mmengine's own hook does, 16 accumulated micro-batches
decay the rate 16x too early: a 3-step run then trained at 1.5e-4, 3.8e-5 and ~0 instead of 2e-4,
1.5e-4, 5e-5). So the curve is the same for any `accumulative_counts` at the same number of steps.
Accumulation itself is the loop's too: the optimizer wrapper sees one update per optimizer step.
"""

from __future__ import annotations

from xtune.errors import ConfigError
from xtune.hardware import Precision, on_cuda
from xtune.schedule import Schedule


def param_schedulers(sched_cfg: dict, schedule: Schedule) -> list[dict]:
    """`dict(type='cosine'|'linear'|'constant', warmup_ratio, eta_min)` -> mmengine schedulers, counted in
    optimizer steps.

    Warm-up is linear from 1e-5 x lr over `round(warmup_ratio x max_steps)` steps, as XTuner's recipes do;
    the first step after it runs at the full lr.
    """
    cfg = dict(sched_cfg or {})
    kind = cfg.pop("type", "cosine")
    warmup_ratio = float(cfg.pop("warmup_ratio", 0.0) or 0.0)
    eta_min = float(cfg.pop("eta_min", 0.0) or 0.0)
    if cfg:
        raise ConfigError(f"param_scheduler has unknown settings {sorted(cfg)}",
                          hint="accepted: type, warmup_ratio, eta_min")
    total = schedule.max_steps
    warmup = min(int(round(warmup_ratio * total)), total - 1) if total > 1 else 0
    # mmengine's LinearLR reaches its end factor at step end - 1; with end == 1 it never leaves
    # start_factor, and the chained decay would then start from 1e-5 x lr: the run would not learn.
    if warmup < 2:
        warmup = 0
    out = []
    if warmup > 0:
        out.append(dict(type="LinearLR", start_factor=1e-5, by_epoch=False, begin=0, end=warmup))
    if kind == "cosine":
        out.append(
            dict(type="CosineAnnealingLR", eta_min=eta_min, by_epoch=False, begin=warmup, end=total,
                 T_max=total - warmup))
    elif kind == "linear":
        out.append(
            dict(type="LinearLR", start_factor=1.0, end_factor=0.0, by_epoch=False, begin=warmup, end=total))
    elif kind == "constant":
        out.append(dict(type="ConstantLR", factor=1.0, by_epoch=False, begin=warmup, end=total))
    else:
        raise ConfigError(f"param_scheduler type {kind!r} is not one of cosine, linear, constant")
    return out


def optim_wrapper_cfg(section: dict, precision: Precision, *, deepspeed: bool) -> dict:
    """The mmengine optim wrapper for the recipe's `optim_wrapper` section at the decided precision.

    CPU bf16 uses the compat module's autocast wrapper (mmengine's AmpOptimWrapper refuses CPUs); with
    DeepSpeed, precision, clipping and accumulation move into the DeepSpeed config instead.
    """
    from xtune.compat import register_cpu_autocast_wrapper

    section = dict(section)
    optimizer = dict(section.pop("optimizer"))
    clip = section.pop("clip_grad", None)
    section.pop("accumulative_counts", None)  # the training loop accumulates (xtune.engine.loop)
    section.pop("dtype", None)  # decided by the caller (xtune.hardware.choose_precision)
    if section:
        raise ConfigError(f"optim_wrapper has unknown settings {sorted(section)}",
                          hint="accepted: optimizer, clip_grad, accumulative_counts, dtype")
    if isinstance(optimizer.get("betas"), list):
        optimizer["betas"] = tuple(optimizer["betas"])
    if deepspeed:
        return dict(type="DeepSpeedOptimWrapper", optimizer=optimizer)
    out = dict(optimizer=optimizer)
    if clip and clip.get("max_norm"):
        out["clip_grad"] = dict(max_norm=float(clip["max_norm"]), error_if_nonfinite=False)
    if precision.name == "float32":
        out["type"] = "OptimWrapper"
    elif on_cuda():
        out.update(type="AmpOptimWrapper", dtype=precision.name)
        if precision.name == "float16":
            out["loss_scale"] = "dynamic"
    else:
        out.update(type=register_cpu_autocast_wrapper(), dtype=precision.name)
    return out
