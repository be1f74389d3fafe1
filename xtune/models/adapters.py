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
