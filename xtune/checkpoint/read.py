"""Reading the weights out of whatever `xtune train` saved: an xtune checkpoint folder or a DeepSpeed one.

`xtune.engine.checkpoints` saves `WORK_DIR/iter_N.pth`. Without DeepSpeed it is a folder of safetensors and
JSON (`xtune.checkpoint.store`) holding only the trainable parameters (`meta.xtune_trainable_only`) under
the names of the engine's model wrapper (`llm.` + the transformers / peft name); older runs wrote the same
content as one pickled file. With DeepSpeed it is a folder of per-rank shards, which DeepSpeed's own
`zero_to_fp32` consolidates for every ZeRO stage. A plain state dict (`.pt`, `.bin`, `.safetensors`, a
consolidated `{"state_dict": ...}` file) is accepted as well. Pickled files are opened only with the
restricted unpickler (`xtune.checkpoint.trust`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xtune.checkpoint.layout import step_from_name
from xtune.checkpoint.store import from_plain, is_store, read_store
from xtune.checkpoint.trust import check_deepspeed_folder, load_pickled, note_old_format
from xtune.errors import UsageError

# Name prefixes added by the wrappers around the transformers / peft model during training.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.", "llm.")


@dataclass
class TrainedWeights:
    """Parameters by their transformers / peft name, plus what the checkpoint says about the run."""

    state_dict: dict[str, Any]
    source: str
    step: int | None = None
    final_loss: float | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def strip_wrapper_prefixes(state_dict: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def final_loss_from_message_hub(hub_state: Any, window: int = 10) -> float | None:
    """The mean training loss over the last `window` logged iterations, from a MessageHub (or its state)."""
    if hub_state is None:
        return None
    scalars = hub_state.get("log_scalars", {}) if isinstance(hub_state, dict) else getattr(hub_state,
        "log_scalars", {})
    buffer = scalars.get("train/loss") if hasattr(scalars, "get") else None
    if buffer is None:
        return None
    try:
        value = float(buffer.mean(window))
    except (AttributeError, TypeError, ValueError, ZeroDivisionError):
        return None
    return value if math.isfinite(value) else None


def _read_file(path: Path) -> TrainedWeights:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return TrainedWeights(strip_wrapper_prefixes(load_file(str(path))), str(path))
        except (SafetensorError, OSError) as exc:
            raise UsageError(f"checkpoint {str(path)!r} is not a readable safetensors file: {exc}") from None
    data = load_pickled(path)
    if isinstance(data, dict) and "meta" in data:
        note_old_format(path)
    if not isinstance(data, dict):
        raise UsageError(f"checkpoint {str(path)!r} holds a {type(data).__name__}, not a state dict")
    state = data.get("state_dict", data.get("module", data))
    if not isinstance(state, dict) or not state:
        raise UsageError(
            f"checkpoint {str(path)!r} holds no model weights ('state_dict' is empty or missing)")
    return TrainedWeights(strip_wrapper_prefixes(state), str(path), step=step_from_name(path),
                          final_loss=final_loss_from_message_hub(data.get("message_hub")),
                          meta=dict(data.get("meta") or {}))


def _read_deepspeed_folder(path: Path) -> TrainedWeights:
    """ZeRO-1/2/3 shards -> one fp32 state dict (DeepSpeed's zero_to_fp32), plus the client state that
    mmengine stored beside the model states (meta, message hub)."""
    model_states = sorted(path.glob("*model_states.pt"))
    if not model_states:
        raise UsageError(
            f"checkpoint folder {str(path)!r} is not a DeepSpeed checkpoint (no *model_states.pt)",
                         hint="pass an iter_N.pth file or folder written by `xtune train`")
    check_deepspeed_folder(path)  # DeepSpeed unpickles fully: nothing it opens may need more than data
    main = path / "mp_rank_00_model_states.pt"
    client = from_plain(load_pickled(main if main.exists() else model_states[0], mmap=True))
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    try:
        # Frozen weights may be stored there as low-precision copies; they come from the base model instead.
        state = get_fp32_state_dict_from_zero_checkpoint(str(path.parent), tag=path.name,
                                                         exclude_frozen_parameters=True)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError, AssertionError) as exc:
        raise UsageError(f"DeepSpeed checkpoint {str(path)!r} cannot be consolidated: {exc}") from None
    return TrainedWeights(strip_wrapper_prefixes(dict(state)), str(path), step=step_from_name(path),
                          final_loss=final_loss_from_message_hub(client.get("message_hub")),
                          meta=dict(client.get("meta") or {}))


def read_checkpoint(path: str | Path) -> TrainedWeights:
    """The trained weights in `path` (an mmengine .pth file, a DeepSpeed folder, or a plain state dict)."""
    path = Path(path).expanduser()
    if not path.exists():
        near = sorted(p.name for p in path.parent.glob("iter_*.pth")) if path.parent.is_dir() else []
        hint = f"checkpoints there: {', '.join(near[-3:])}" if near else None
        raise UsageError(f"checkpoint {str(path)!r} does not exist", hint=hint)
    if is_store(path):
        return _read_store(path)
    if path.is_dir():
        return _read_deepspeed_folder(path)
    return _read_file(path)


def _read_store(path: Path) -> TrainedWeights:
    data = read_store(path, with_state_tensors=False)
    return TrainedWeights(strip_wrapper_prefixes(data["state_dict"]), str(path), step=step_from_name(path),
                          final_loss=final_loss_from_message_hub(data.get("message_hub")),
                          meta=dict(data.get("meta") or {}))


def without_heads(state_dict: dict[str, Any]) -> dict[str, Any]:
    """The model's tensors without the heads an objective trains beside it (`heads.`: PPO's value head),
    which are part of a checkpoint but never of the exported or resumed model."""
    return {k: v for k, v in state_dict.items() if not k.startswith("heads.")}


def check_fits(model, state_dict: dict, *, source: str, what: str, hint: str) -> None:
    """Every trainable parameter of `model` must come from `state_dict`, and every entry of it must have a
    place of the same shape (else one UsageError: the checkpoint is from another model or other settings)."""
    own = model.state_dict()
    unexpected = [k for k in state_dict if k not in own]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    missing = [n for n in trainable if n not in state_dict]
    wrong = [f"{k} {tuple(v.shape)} there, {tuple(own[k].shape)} here" for k, v in state_dict.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if unexpected:
        raise UsageError(
            f"checkpoint {source!r} does not fit {what}: {len(unexpected)} of its {len(state_dict)} "
                         f"tensors have no place in the model, e.g. {unexpected[0]!r}", hint=hint)
    if wrong:
        raise UsageError(f"checkpoint {source!r} does not fit {what}: shape mismatch in {wrong[0]}",
                         hint=hint)
    if missing:
        raise UsageError(
            f"checkpoint {source!r} lacks {len(missing)} of the {len(trainable)} trained tensors "
                         f"of {what}, e.g. {missing[0]!r}", hint=hint)
