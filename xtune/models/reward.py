"""Reward models (`AutoModelForSequenceClassification`, one label): the trained score head, and loading a
finished reward model to score with (`xtune reward`, PPO).

A reward model is trained from a causal LM checkpoint by `build_trainable` (objective `reward`), so its
scalar head starts untrained and must train with every tuning method: peft keeps it as a module to save
beside the adapters (task type SEQ_CLS), and full / freeze / bitfit tuning get it switched on here.
"""

from __future__ import annotations

import json
from pathlib import Path

from xtune.errors import UsageError


def train_score_head(model) -> None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = getattr(base, "score", None)
    if head is None:
        raise UsageError(f"{type(base).__name__} has no score head: this family has no "
                         "sequence-classification model in transformers")
    for p in head.parameters():
        p.requires_grad_(True)


def load_reward_model(path: str, *, precision: str = "float32", source: str = "auto"):
    """(model, tokenizer) of a reward model folder: a full sequence-classification model, or a PEFT adapter
    of one (its base is read from adapter_config.json), frozen, in eval mode, on CUDA when there is one."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from xtune.hardware import torch_dtype
    from xtune.models.adapters import ADAPTER_CONFIG, apply_adapter
    from xtune.models.sources import resolve_source

    folder = Path(path).expanduser()
    adapter = folder if (folder / ADAPTER_CONFIG).is_file() else None
    base = path
    if adapter is not None:
        config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        base = config.get("base_model_name_or_path")
        if not base:
            raise UsageError(f"adapter {str(folder)!r} does not name its base model "
                             "(base_model_name_or_path)")
    src = resolve_source(str(base), source)
    dtype = torch_dtype(precision) if torch.cuda.is_available() else torch.float32
    try:
        model = AutoModelForSequenceClassification.from_pretrained(src.path, num_labels=1, dtype=dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(adapter) if adapter and any(adapter.glob("tokenizer*"))
                                                  else src.path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the reward model {path!r}: {str(exc).strip().splitlines()[0][:300]}") \
            from None
    if adapter is not None:
        model = apply_adapter(model, adapter, base_name=f"reward model base {base!r}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval().requires_grad_(False)
    return model, tokenizer
