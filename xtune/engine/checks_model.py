"""Preflight checks of the model section, the tuning method's settings and the checkpoint to resume from.

A misspelt model setting used to surface 18 s later as a transformers error, `method_cfg.r=0` after the
model had loaded (in peft's words), and a truncated checkpoint as a raw zip error after loading too; here
each becomes one line before anything heavy runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from xtune.errors import RegistryError, XtuneError, closest

# Keys of the recipe's `model` section that xtune reads itself, and `from_pretrained` keywords.
MODEL_KEYS = {"pretrained_model_name_or_path", "adapter", "trust_remote_code", "torch_dtype",
              "attn_implementation",
              "gradient_checkpointing", "quantization", "use_varlen_attn"}
FROM_PRETRAINED_KEYS = {"revision", "cache_dir", "local_files_only", "token", "low_cpu_mem_usage",
                        "device_map",
                        "max_memory", "offload_folder", "offload_state_dict", "use_safetensors", "variant",
                        "subfolder", "code_revision", "force_download", "key_mapping"}
# Numeric method settings and what they must be.
_RANGES = {"r": ("a positive integer", lambda v: isinstance(v, int) and v > 0),
           "lora_alpha": ("a positive number", lambda v: isinstance(v, (int, float)) and v > 0),
           "lora_dropout": ("a number in [0, 1)", lambda v: isinstance(v, (int, float)) and 0 <= v < 1),
           "num_virtual_tokens": ("a positive integer", lambda v: isinstance(v, int) and v > 0),
           "trainable_layers": ("a non-negative integer", lambda v: isinstance(v, int) and v >= 0)}


def _config_keys(model_path: str) -> set[str] | None:
    """The fields of a local model's config.json (None for a hub id: unknown without downloading it)."""
    path = Path(model_path).expanduser() / "config.json"
    try:
        return set(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def check_model_section(problems: list[str], cfg) -> None:
    """A key of `model` that is neither xtune's, nor a `from_pretrained` keyword, nor a field of the local
    model's config is a typo."""
    fields = _config_keys(str(cfg.model.get("pretrained_model_name_or_path", "")))
    if fields is None:
        return
    known = MODEL_KEYS | FROM_PRETRAINED_KEYS | fields
    for key in cfg.model:
        if key not in known:
            hint = closest(key, sorted(known))
            problems.append(f"model.{key} is not a model setting" + (f" (did you mean {', '.join(hint)}?)"
                                                                    if hint else ""))


def check_method(problems: list[str], cfg, registry) -> None:
    """The method's settings: known names (the peft config's fields) and sensible values."""
    from xtune.methods.common import resolve_method

    try:
        entry, settings = resolve_method(cfg.method_cfg, registry)
    except RegistryError:
        return  # reported by the registry lookups
    for key, (what, ok) in _RANGES.items():
        if key in settings and not ok(settings[key]):
            problems.append(f"method_cfg.{key}={settings[key]!r} must be {what}")
    allowed = _allowed_settings(entry)
    unknown = [k for k in settings if k not in allowed]
    for key in unknown:
        hint = closest(key, sorted(allowed))
        problems.append(f"method_cfg.{key} is not a setting of method {entry.name!r}"
                        + (f" (did you mean {', '.join(hint)}?)" if hint else ""))


def _allowed_settings(entry) -> set[str]:
    if not entry.settings_class:
        return set(dict(entry.defaults))
    import dataclasses

    from xtune.methods.peft_config import RESERVED
    from xtune.registry import import_object

    fields = {f.name for f in dataclasses.fields(import_object(entry.settings_class))} - RESERVED
    return fields | set(dict(entry.defaults))  # and xtune's own settings (LoRA's `init`)


def check_resume(problems: list[str], resume: str | None, work_dir) -> None:
    """The checkpoint `--resume` names (or `auto` finds) exists and is readable: a truncated file would
    otherwise fail only after the model has loaded."""
    if not resume:
        return
    from xtune.checkpoint.layout import find_resume_checkpoint

    try:
        path = find_resume_checkpoint(resume, work_dir)
    except XtuneError as exc:
        problems.append(str(exc))
        return
    if path is None:
        return
    from xtune.checkpoint.store import is_store, verify_store
    from xtune.checkpoint.trust import check_deepspeed_folder, load_pickled

    path = Path(path)
    try:
        if is_store(path):
            verify_store(path)
        elif path.is_dir():
            if not any(path.glob("*model_states.pt")):
                problems.append(f"--resume: {str(path)!r} is not a checkpoint written by xtune train")
                return
            check_deepspeed_folder(path)
        else:
            load_pickled(path, mmap=True)  # an older pickled checkpoint: restricted, tensors not read
    except XtuneError as exc:
        problems.append(f"--resume: {exc}")
