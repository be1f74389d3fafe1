"""From a loaded recipe (and the command line's device, DeepSpeed preset and device count) to the estimate's
`Plan`: the same 'auto' rules the engine applies, spelled out without importing torch.

`torch_dtype='auto'` stores weights in bf16 on a GPU and in fp32 on a CPU; `optim_wrapper.dtype='auto'`
means bf16 autocast on both (a CPU without native bf16 trains in fp32: pass `optim_wrapper.dtype=float32`
to estimate that); a LoRA-family method is a peft method with a rank `r`; a QLoRA base is 4-bit NF4 with
double quantisation unless the recipe's `quantization` says otherwise.
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


def plan_for_recipe(cfg, registry, *, device: str = "cuda", deepspeed: str | None = None,
                    num_devices: int = 1) -> tuple[Architecture, Plan]:
    """The architecture and the plan of a loaded recipe on `num_devices` devices of kind `device`."""
    model_cfg = dict(cfg.model)
    path = str(model_cfg.get("pretrained_model_name_or_path", ""))
    arch = find_architecture(path, registry)
    method = registry.tuning_methods.get(cfg.method_cfg.get("type"))
    settings = {**dict(method.defaults), **{k: v for k, v in dict(cfg.method_cfg).items() if k != "type"}}
    quant = dict(model_cfg.get("quantization") or {}) or dict(method.quantization)
    bits = method.load_in_bits or {(True, False): 4, (False, True): 8}.get(
        (bool(quant.get("load_in_4bit")), bool(quant.get("load_in_8bit"))))
    rank = int(settings.get("r") or 0) if method.uses_peft else 0
    targets = settings.get("target_modules")
    if targets in (None, "auto") and model_cfg.get("adapter") in registry.model_adapters:
        targets = registry.model_adapters.get(model_cfg["adapter"]).lora_target_modules
    stage, offload_optimizer, offload_params = deepspeed_settings(deepspeed, registry)
    optimizer = dict(cfg.optim_wrapper.get("optimizer") or {})
    batch_size, seq_len, objective, frozen = _rows(cfg, registry, method, arch)
    vision = vision_parts(cfg, registry, arch.hidden_size)
    plan = Plan(
        method=method.name, lora_rank=rank, lora_dropout=float(settings.get("lora_dropout") or 0.0),
        lora_targets=tuple(targets) if isinstance(targets, (list, tuple)) else (),
        trainable_layers=int(settings.get("trainable_layers") or 0), load_in_bits=bits,
        double_quant=bool(quant.get("bnb_4bit_use_double_quant", True)), device=device,
        weight_bytes=_bytes(model_cfg.get("torch_dtype"), 2 if device == "cuda" else 4),
        compute_bytes=_bytes(cfg.optim_wrapper.get("dtype"), 2),
        optimizer=str(optimizer.get("type", "AdamW")),
        batch_size=batch_size, seq_len=seq_len, objective=objective.name, frozen_params=frozen,
        score_head=objective.score_head, vision_params=vision.vision_params,
        projector_params=vision.projector_params,
        vision_trained=(vision.projector_params if vision.projector_trainable else 0)
        + (vision.vision_params if vision.vision_trainable else 0),
        accumulation=int(cfg.optim_wrapper.get("accumulative_counts", 1) or 1),
        gradient_checkpointing=bool(model_cfg.get("gradient_checkpointing")),
        attention="eager" if model_cfg.get("attn_implementation") == "eager" else "sdpa",
        deepspeed_stage=stage, offload_optimizer=offload_optimizer, offload_params=offload_params,
        num_devices=num_devices, checkpoint_bytes=_checkpoint_bytes(path))
    return arch, plan


def _rows(cfg, registry, method, arch: Architecture):
    """(micro-batch rows, tokens per row, the objective's cost, frozen parameters beside the policy): a
    preference objective's pairs are packed into rows of 2 x max_length or batched as 2 x batch_size
    sequences; PPO's sequences are a prompt and its generated answer."""
    from xtune.estimate.objective import objective_cost

    cost = objective_cost(cfg, registry, method)
    batch_size = int(cfg.train_dataloader.get("batch_size", 1))
    seq_len = int(cfg.train_dataset.get("max_length")) + cost.extra_tokens
    if cost.sequences > 1:
        if cfg.train_dataset.get("pack_to_max_length"):
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
