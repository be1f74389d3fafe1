"""DeepSpeed configs: a registry preset or a user's JSON file, with "auto" fields filled from the recipe.

The recipe stays authoritative for batch size, accumulation, clipping and precision, so one preset serves
every recipe. On a machine without CUDA the config is adjusted so DeepSpeed runs on CPU without JIT-built
ops (docs/compatibility.md): torch's Adam instead of cpu_adam/fused_adam and no pinned memory.
"""

from __future__ import annotations

import json
from pathlib import Path

from xtune.errors import ConfigError


def load_deepspeed_config(name_or_file: str, registry) -> dict:
    """A preset name (`zero2`) or a path to a DeepSpeed JSON file."""
    path = Path(name_or_file)
    if name_or_file.endswith(".json") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"DeepSpeed config file {name_or_file!r} does not exist")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}: DeepSpeed config is not valid JSON: {exc.msg}") from None
        if not isinstance(config, dict):
            raise ConfigError(f"{path}: a DeepSpeed config must be a JSON object")
        return config
    return registry.deepspeed_presets.get(name_or_file).as_dict()


def _fill(section: dict, key: str, value) -> None:
    if section.get(key, "auto") == "auto":
        section[key] = value


def fill_auto(config: dict, *, micro_batch: int, accumulation: int, max_norm: float | None, precision: str,
              world_size: int = 1, cuda: bool | None = None) -> dict:
    """Replace every "auto" with the recipe's value; refuse values that contradict the recipe."""
    import copy

    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    config = copy.deepcopy(config)
    _fill(config, "train_micro_batch_size_per_gpu", micro_batch)
    _fill(config, "gradient_accumulation_steps", accumulation)
    _fill(config, "gradient_clipping", float(max_norm or 0.0))
    if config.get("train_batch_size", "auto") == "auto":
        config["train_batch_size"] = micro_batch * accumulation * world_size
    expected = config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"] * world_size
    if config["train_batch_size"] != expected:
        raise ConfigError(
            f"DeepSpeed train_batch_size={config['train_batch_size']} does not equal micro batch x "
            f"accumulation x processes = {expected}",
            hint='set it to "auto"',
        )
    bf16 = config.setdefault("bf16", {})
    fp16 = config.setdefault("fp16", {})
    _fill(bf16, "enabled", precision == "bfloat16")
    _fill(fp16, "enabled", precision == "float16")
    if bf16["enabled"] and fp16["enabled"]:
        raise ConfigError("DeepSpeed config enables both bf16 and fp16")
    if not cuda:
        _cpu_only(config)
    return config


def _cpu_only(config: dict) -> None:
    """No JIT ops and no pinned memory on a machine without CUDA."""
    optimizer = config.get("optimizer")
    if optimizer is not None:
        optimizer.setdefault("params", {})["torch_adam"] = True
    zero = config.get("zero_optimization", {})
    for key in ("offload_optimizer", "offload_param"):
        if isinstance(zero.get(key), dict):
            zero[key]["pin_memory"] = False
    # ZeRO-2 overlap_comm needs CUDA streams.
    zero["overlap_comm"] = False
