"""`xtune estimate`: how much memory a recipe's training needs, from the model's architecture alone.

Nothing here downloads weights or imports torch for a registered model: the figures come from the
registry (or a `config.json`), the settings from the recipe, and the memory model (`memory`) turns them
into bytes per device. `xtune train` asks the same question in its preflight and warns when the answer is
more than the free memory it sees (`devices`).
"""

from __future__ import annotations

from xtune.estimate.memory import Estimate, Plan, estimate

__all__ = ["Estimate", "Plan", "estimate", "estimate_recipe_cfg", "memory_warning"]


def estimate_recipe_cfg(cfg, registry, run, *, device: str = "cuda", num_devices: int = 1,
                        labelled_share: float = 1.0) -> Estimate:
    """The estimate for a loaded recipe and its run plan (`xtune.plan.RunPlan`: the method, quantisation,
    precision and DeepSpeed preset training uses); `labelled_share` is the share of tokens with a label (of
    those the objective computes logits for: GRPO's completions)."""
    from dataclasses import replace

    from xtune.estimate.settings import plan_for_recipe

    arch, plan = plan_for_recipe(cfg, registry, run, device=device, num_devices=num_devices)
    return estimate(arch, replace(plan, labelled_share=plan.labelled_share * labelled_share))


def memory_warning(cfg, registry, run) -> str | None:
    """A warning line when the estimated peak exceeds the free memory of this machine's device, else None.

    Never raises: a model whose figures cannot be found offline, or a probe that fails, gives no warning
    (the estimate is advice; the run itself decides).
    """
    from xtune.errors import XtuneError
    from xtune.estimate.devices import free_memory

    try:
        device, free, world = free_memory()
        est = estimate_recipe_cfg(cfg, registry, run, device=device, num_devices=world)
    except (XtuneError, OSError, ValueError, KeyError, TypeError):
        return None
    needed = est.total * (world if device == "cpu" else 1)  # CPU processes share one machine's RAM
    if free is None or needed <= free:
        return None
    what = "GPU memory free" if device == "cuda" else "RAM available"
    return (f"Warning: the estimated peak of this run is {needed / 2**30:.1f} GiB per {device} device but "
            f"only {free / 2**30:.1f} GiB {what}; it may run out of memory (see `xtune estimate` for the "
            "breakdown: gradient checkpointing, a smaller max_length or batch_size, QLoRA or DeepSpeed "
            "offload reduce it)")
