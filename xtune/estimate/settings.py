"""From a recipe's run plan (and the command line's device and device count) to the estimate's `Plan`.

The settings training shares with the estimate — the tuning method and its settings, `target_modules`,
the quantised base and its bits, the weights' and compute precision, accumulation, checkpointing, the
DeepSpeed preset — come from the run plan (`xtune.plan.RunPlan`), which training reads too, so the two
cannot disagree. Only what is the estimate's own is decided here: `torch_dtype='auto'` stores weights in
bf16 on a GPU and in fp32 on a CPU; `optim_wrapper.dtype='auto'` means bf16 autocast on both (a CPU without
native bf16 trains in fp32: pass `optim_wrapper.dtype=float32` to estimate that).
"""

from __future__ import annotations

import json
from pathlib import Path

from xtune.errors import UsageError
from xtune.estimate.architecture import Architecture, find_architecture
from xtune.estimate.memory import Plan
from xtune.estimate.vision import vision_parts

_DTYPE_BYTES = {"float32": 4, "fp32": 4, "float": 4, "bfloat16": 2, "bf16": 2, "float16": 2, "fp16": 2,
                "half": 2}


def _bytes(name, auto: int) -> int:
    if name in (None, "auto"):
        return auto
    if str(name) not in _DTYPE_BYTES:
        raise UsageError(f"unknown dtype {name!r}", hint="use auto, bfloat16, float16 or float32")
    return _DTYPE_BYTES[str(name)]


def deepspeed_settings(name: str | None, registry) -> tuple[int, bool, bool]:
    """(ZeRO stage, optimizer offloaded, parameters offloaded) of a preset name or a JSON file."""
    if not name:
        return 0, False, False
    if name in registry.deepspeed_presets:
        config = registry.deepspeed_presets.get(name).as_dict()
    elif Path(name).is_file():
        try:
            config = json.loads(Path(name).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"--deepspeed {name!r} is not a readable JSON file: {exc}") from None
    else:
        registry.deepspeed_presets.get(name)  # raises with the closest preset names
    zero = config.get("zero_optimization") or {}

    def offloaded(key: str) -> bool:
        return (zero.get(key) or {}).get("device", "none") in ("cpu", "nvme")

    return int(zero.get("stage", 0)), offloaded("offload_optimizer"), offloaded("offload_param")


def _checkpoint_bytes(path: str) -> int:
    """Bytes per parameter of the checkpoint files (2 unless a local config says fp32)."""
    config = Path(path).expanduser() / "config.json"
    try:
        dtype = json.loads(config.read_text(encoding="utf-8")).get("dtype") if config.is_file() else None
    except (OSError, json.JSONDecodeError):
        dtype = None
    return 4 if dtype in ("float32",) else 2


def plan_for_recipe(cfg, registry, run, *, device: str = "cuda", num_devices: int = 1
                    ) -> tuple[Architecture, Plan]:
    """The architecture and the plan of a loaded recipe with its run plan `run` on `num_devices` devices of
    kind `device`."""
    path = run.model.path
    arch = find_architecture(path, registry)
    method = registry.tuning_methods.get(run.method.name)
    settings = dict(run.method.settings)
    quant = run.model.quantization
    rank = int(settings.get("r") or 0) if run.method.uses_peft else 0
    targets = settings.get("target_modules")
    stage, offload_optimizer, offload_params = deepspeed_settings(run.training.deepspeed, registry)
    optimizer = dict(run.training.optimizer)
    batch_size, seq_len, objective, frozen = _rows(cfg, registry, method, arch)
    vision = vision_parts(cfg, registry, arch.hidden_size)
    plan = Plan(
        method=method.name, lora_rank=rank, lora_dropout=float(settings.get("lora_dropout") or 0.0),
        lora_targets=tuple(targets) if isinstance(targets, (list, tuple)) else (),
        trainable_layers=int(settings.get("trainable_layers") or 0), load_in_bits=run.model.load_in_bits,
        method_rank=int(settings.get("rank") or 0) if not run.method.uses_peft else 0,
        activated_layers=int(settings.get("activated_layers") or 0),
        double_quant=bool(quant.get("bnb_4bit_use_double_quant", True)), device=device,
        weight_bytes=_bytes(run.model.weights_dtype, 2 if device == "cuda" else 4),
        compute_bytes=_bytes(run.training.precision, 2),
        optimizer=str(optimizer.get("type", "AdamW")),
        batch_size=batch_size, seq_len=seq_len, objective=objective.name, frozen_params=frozen,
        sequence_parallel=run.training.sequence_parallel,
        score_head=objective.score_head, kv_cache=objective.kv_cache, vision_params=vision.vision_params,
        # GRPO computes logits at the completions' positions only
        labelled_share=objective.extra_tokens / seq_len if objective.kv_cache else 1.0,
        projector_params=vision.projector_params,
        vision_trained=(vision.projector_params if vision.projector_trainable else 0)
        + (vision.vision_params if vision.vision_trainable else 0),
        accumulation=run.training.accumulation, gradient_checkpointing=run.model.gradient_checkpointing,
        attention="eager" if run.model.attention == "eager" else "sdpa",
        deepspeed_stage=stage, offload_optimizer=offload_optimizer, offload_params=offload_params,
        num_devices=num_devices, checkpoint_bytes=_checkpoint_bytes(path))
    return arch, plan


def _rows(cfg, registry, method, arch: Architecture):
    """(micro-batch rows, tokens per row, the objective's cost, frozen parameters beside the policy): a
    preference objective's pairs are packed into rows of 2 x max_length or batched as 2 x batch_size
    sequences; PPO's sequences are a prompt and its generated answer, GRPO's batch_size x num_generations
    of them (prompts are never packed)."""
    from xtune.estimate.objective import objective_cost

    cost = objective_cost(cfg, registry, method)
    batch_size = int(cfg.train_dataloader.get("batch_size", 1))
    seq_len = int(cfg.train_dataset.get("max_length")) + cost.extra_tokens
    if cost.sequences > 1:
        if cfg.train_dataset.get("pack_to_max_length") and not cost.kv_cache:
            seq_len *= cost.sequences
        else:
            batch_size *= cost.sequences
    frozen = arch.params if cost.reference_copy else 0
    if cost.reward_model:
        try:
            frozen += find_architecture(cost.reward_model, registry).params
        except UsageError:  # not trained yet: a reward model of the policy's size, as the recipes train
            frozen += arch.params
    return batch_size, seq_len, cost, frozen
