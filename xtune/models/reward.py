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
from xtune.models.adapters import ADAPTER_CONFIG


def train_score_head(model) -> None:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = getattr(base, "score", None)
    if head is None:
        raise UsageError(f"{type(base).__name__} has no score head: this family has no "
                         "sequence-classification model in transformers")
    for p in head.parameters():
        p.requires_grad_(True)


REWARD_HINT = ("pass a reward model: WORK_DIR/hf of a reward recipe's run (`xtune list-cfg -p reward`), "
               "or train one with such a recipe")


def not_a_reward_model(path) -> str | None:
    """Why the local folder `path` is no reward model, else None (None too for what is not a local folder).

    transformers loads any causal LM as a sequence classifier, gives it a freshly initialised score head
    and only lists `score.weight` as MISSING: an SFT model (or its merge) would score at random, and an SFT
    adapter would fail deep inside peft. Reading config.json / adapter_config.json tells them apart before
    anything loads, so `xtune reward` and PPO's preflight refuse them in one line."""
    folder = Path(str(path)).expanduser()
    if (folder / ADAPTER_CONFIG).is_file():
        config = _json(folder / ADAPTER_CONFIG)
        task = config.get("task_type")
        if task != "SEQ_CLS" and "score" not in (config.get("modules_to_save") or ()):
            return (f"{str(path)!r} is an adapter trained for a causal LM (task_type {task}), not as a "
                    "reward model: it has no trained score head")
        return None
    if not (folder / "config.json").is_file():
        return None
    return _untrained_head(path, _json(folder / "config.json").get("architectures") or [], [])


def check_reward_model(path) -> None:
    """`not_a_reward_model` as a UsageError, with what to pass instead."""
    if problem := not_a_reward_model(path):
        raise UsageError(problem, hint=REWARD_HINT)


def _json(file: Path) -> dict:
    try:
        value = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # the loader reports an unreadable file itself
    return value if isinstance(value, dict) else {}


def _untrained_head(path, architectures: list, missing) -> str | None:
    """The message for a full model that is no sequence classifier, or whose loading left weights missing."""
    if architectures and not any(str(c).endswith("ForSequenceClassification") for c in architectures):
        return (f"{str(path)!r} ({', '.join(map(str, architectures))}) is not a reward model: it has no "
                "trained score head, its scores would come from random weights")
    if missing:
        return (f"{str(path)!r} is not a reward model: its weights lack {', '.join(sorted(missing))}, which "
                "would score with random weights")
    return None


def load_reward_model(path: str, *, precision: str = "float32", source: str = "auto"):
    """(model, tokenizer) of a reward model folder: a full sequence-classification model, or a PEFT adapter
    of one (its base is read from adapter_config.json), frozen, in eval mode, on CUDA when there is one.
    A causal LM or an adapter of one is refused (`not_a_reward_model`), before loading when the folder is
    local and by the weights the load left missing otherwise."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from xtune.hardware import torch_dtype
    from xtune.models.adapters import apply_adapter
    from xtune.models.sources import resolve_source

    check_reward_model(path)
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
        model, info = AutoModelForSequenceClassification.from_pretrained(src.path, num_labels=1, dtype=dtype,
                                                                         output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(str(adapter) if adapter and any(adapter.glob("tokenizer*"))
                                                  else src.path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load the reward model {path!r}: {str(exc).strip().splitlines()[0][:300]}") \
            from None
    if adapter is None and (problem := _untrained_head(path, [], info.get("missing_keys"))):
        raise UsageError(problem, hint=REWARD_HINT)  # a hub id: known once loaded
    if adapter is not None:
        model = apply_adapter(model, adapter, base_name=f"reward model base {base!r}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if torch.cuda.is_available():
        model = model.to("cuda")
    model.eval().requires_grad_(False)
    return model, tokenizer
