"""Loading a PEFT adapter folder onto a base model, refusing one that does not fit.

peft itself only *warns* when an adapter's tensors find no place in the base ("Found missing adapter
keys") and then runs with untrained, freshly initialised adapter weights: a chat or a merge would
silently use a different model. Here that warning, a shape mismatch or an unknown target module
become one `Error:` line naming the adapter and the base.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

from xtune.errors import UsageError

ADAPTER_CONFIG = "adapter_config.json"
INFO_FILE = "xtune_info.json"  # what xtune.export.model_card records beside an export (the base's family)
log = logging.getLogger("xtune")


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


def is_adapter_folder(path) -> bool:
    """Whether `path` is a local PEFT adapter folder (it holds adapter_config.json)."""
    return (Path(str(path)).expanduser() / ADAPTER_CONFIG).is_file()


def adapter_base(adapter) -> str | None:
    """The base model an adapter folder names (adapter_config.json's `base_model_name_or_path`), else None."""
    config = json.loads((check_adapter_dir(adapter) / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    return str(config.get("base_model_name_or_path") or "") or None


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _trained_on(adapter) -> tuple[str | None, str | None]:
    """(base name, its model_type) as the adapter folder records them: adapter_config.json and pth_to_hf's
    xtune_info.json; the type from the recorded base's own config.json when that folder is at hand."""
    info = _json(Path(adapter) / INFO_FILE)
    base = adapter_base(adapter) or info.get("base_model")
    family = info.get("base_model_type")
    if not family and base and Path(base).expanduser().is_dir():
        family = _json(Path(base).expanduser() / "config.json").get("model_type")
    return base, family


def _same_model(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return a == b or (pa.exists() and pb.exists() and pa.resolve() == pb.resolve())


def check_adapter_base(adapter, base: str, config, legacy=None) -> None:
    """Refuse an adapter trained on another family of model than `base` (its `config`, or the `legacy`
    layout it is converted from): peft would place what fits (a Qwen2-VL adapter's LoRA into a LLaVA's
    language model) and drop the rest (its projector) without a word. Another base of the same family is
    allowed, with a warning naming both: a same-shaped other model takes the adapter, but gives a model
    that was never trained."""
    if not adapter:
        return
    family = legacy.source_type if legacy is not None else getattr(config, "model_type", None)
    recorded, recorded_family = _trained_on(adapter)
    if recorded_family and family and recorded_family != family:
        raise UsageError(f"adapter {str(adapter)!r} was trained on a {recorded_family} model ({recorded!r}), "
                         f"but the base {base!r} is a {family} model",
                         hint=f"use the base it was trained on: {recorded}" if recorded else None)
    if recorded and not _same_model(recorded, base):
        log.warning("Warning: adapter %r was trained on base %r, not %r (right for a copy of that model; "
                    "another model of the same shape takes the adapter but gives a model nobody trained)",
                    str(adapter), recorded, base)


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
    _refuse_unplaced_modules(peft_model, path, base_name)
    return peft_model


def _refuse_unplaced_modules(peft_model, path: Path, base_name: str) -> None:
    """peft silently skips a `modules_to_save` entry (a VLM's trained projector) that names no module of
    the base: the adapter would run without weights it stores. (peft adds names of its own, `classifier`
    and `score` for a reward model, which only one of them has: an entry without stored weights is not
    checked.)"""
    from safetensors import safe_open

    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        return
    with safe_open(str(weights), "pt") as f:
        stored = ["." + k for k in f.keys()]
    saved = getattr(peft_model.peft_config.get("default"), "modules_to_save", None) or []
    names = [n for n, _ in peft_model.named_modules()]
    missing = [m for m in saved if any(f".{m}." in k for k in stored)
               and not any(n == m or n.endswith("." + m) for n in names)]
    if missing:
        raise UsageError(f"adapter {str(path)!r} does not fit {base_name}: its trained module(s) "
                         f"{', '.join(missing)} have no place in the base")


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
