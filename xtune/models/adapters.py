"""Loading a PEFT adapter folder onto a base model, refusing one that does not fit.

peft itself only *warns* when an adapter's tensors find no place in the base ("Found missing adapter
keys") and then runs with untrained, freshly initialised adapter weights: a chat or a merge would
silently use a different model. Here that warning, a shape mismatch or an unknown target module
become one `Error:` line naming the adapter and the base.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from xtune.errors import UsageError

ADAPTER_CONFIG = "adapter_config.json"


def check_adapter_dir(adapter: str | Path) -> Path:
    """The adapter folder, which must hold `adapter_config.json` and safetensors (or .bin) weights."""
    path = Path(adapter).expanduser()
    if not path.is_dir():
        raise UsageError(f"adapter folder {str(path)!r} does not exist")
    if not (path / ADAPTER_CONFIG).is_file():
        hint = "this looks like a full model: chat with it directly" if (
            path / "config.json").is_file() else None
        raise UsageError(f"{str(path)!r} is not a PEFT adapter folder (no {ADAPTER_CONFIG})", hint=hint)
    if not any(path.glob("adapter_model.*")):
        raise UsageError(f"adapter folder {str(path)!r} has no adapter_model.safetensors")
    try:
        json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{str(path / ADAPTER_CONFIG)!r} is not valid JSON: {exc}") from None
    return path


def apply_adapter(model, adapter: str | Path, base_name: str = "the base model"):
    """`PeftModel.from_pretrained(model, adapter)` in inference mode, or a UsageError when it does not fit."""
    from peft import PeftModel

    path = check_adapter_dir(adapter)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
        except (ValueError, RuntimeError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0][:300]
            raise UsageError(f"adapter {str(path)!r} does not fit {base_name}: {first}") from None
    for w in caught:
        text = str(w.message)
        if "missing adapter keys" in text:
            raise UsageError(
                f"adapter {str(path)!r} does not fit {base_name}: its weights have no place in the "
                             f"base ({text[:200]})")
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return peft_model


def refuse_reward_model(config, adapter, name: str) -> None:
    """A reward model (a sequence classifier: a score head, no language-model head) cannot generate; loaded
    as a causal LM its score head would be dropped without a word, so chat, merge and GGUF export refuse it,
    whether it is a full model (`config`'s architectures) or a SEQ_CLS adapter."""
    classes = getattr(config, "architectures", None) or ()
    what = name if any(c.endswith("ForSequenceClassification") for c in classes) else None
    if adapter and what is None:
        try:
            task = json.loads((Path(adapter).expanduser() / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            task = {}  # check_adapter_dir reports it
        what = str(adapter) if task.get("task_type") == "SEQ_CLS" else None
    if what is not None:
        raise UsageError(f"{what!r} is a reward model (a score head, no language-model head): it scores "
                         "answers, it does not generate them",
                         hint=f"score with it: xtune reward {what} --prompt P --response R")
