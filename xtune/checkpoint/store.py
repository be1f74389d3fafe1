"""xtune's own checkpoint format: tensors in safetensors, everything else in JSON, so a checkpoint is data.

A pickled checkpoint can run any code the moment it is opened; these files cannot. `WORK_DIR/iter_N.pth`
keeps its name (every command, habit and DeepSpeed's folders use it) but is a folder:

    iter_N.pth/
        checkpoint.json      the run state: meta (step, recipe, layout), message-hub scalars, optimizer
                             and scheduler settings, RNG states, loss history; {"$tensor": KEY} marks a tensor
        model.safetensors    the trained tensors (`state_dict`), what `convert pth_to_hf` reads
        state.safetensors    every other tensor of the run state (optimizer moments, RNG states)

`to_plain` / `from_plain` translate what mmengine and xtune's hooks put in a checkpoint dict (tensors,
tuples, dicts with integer keys, numpy arrays and scalars, mmengine's `HistoryBuffer`) to JSON-able data
and back; anything else is a programming error raised at save time, never a silently lost entry. The same
translation keeps DeepSpeed's client state free of classes (`xtune.compat`, fix 5).
"""

from __future__ import annotations

import collections
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

FORMAT = "xtune-checkpoint"
VERSION = 1
STATE_FILE = "checkpoint.json"
MODEL_FILE = "model.safetensors"
TENSOR_FILE = "state.safetensors"


def is_store(path: str | Path) -> bool:
    """A folder in this format (a DeepSpeed folder has `*model_states.pt` instead)."""
    return (Path(path) / STATE_FILE).is_file()


def to_plain(obj: Any, tensor: Callable[[str, Any], Any], key: str = "") -> Any:
    """`obj` as JSON-able data; every tensor goes through `tensor(key, t)`, which returns what stands in
    its place (a `{"$tensor": key}` marker for the JSON file, the tensor itself for DeepSpeed)."""
    import numpy as np
    import torch
    from mmengine.logging.history_buffer import HistoryBuffer

    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        return tensor(key, obj)
    if isinstance(obj, np.ndarray):
        return {"$ndarray": to_plain(torch.from_numpy(np.ascontiguousarray(obj)), tensor, key)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, HistoryBuffer):
        log, count = obj.data
        return {"$history": {"log": log.tolist(), "count": count.tolist(), "max_length": obj.max_length}}
    if isinstance(obj, tuple):  # torch.Size included: it is a tuple of ints
        return {"$tuple": [to_plain(v, tensor, f"{key}/{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [to_plain(v, tensor, f"{key}/{i}") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("$") for k in obj):
            return {k: to_plain(v, tensor, f"{key}/{k}") for k, v in obj.items()}
        return {"$dict": [[to_plain(k, tensor, key), to_plain(v, tensor, f"{key}/{k}")]
                          for k, v in obj.items()]}
    raise TypeError(f"checkpoint entry {key or '/'!r} is a {type(obj).__module__}.{type(obj).__qualname__}, "
                    "which xtune does not store (tensors, numbers, strings, lists, tuples and dicts only)")


def from_plain(obj: Any, tensors: dict | None = None) -> Any:
    """The inverse of `to_plain`: markers back to tensors (from `tensors`), tuples, dicts, numpy arrays
    and `HistoryBuffer`s; plain data passes through unchanged."""
    if isinstance(obj, list):
        return [from_plain(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if len(obj) == 1:
        (marker, value), = obj.items()
        if marker == "$tensor":
            return tensors[value]
        if marker == "$ndarray":
            array = from_plain(value, tensors)
            return None if array is None else array.numpy()
        if marker == "$tuple":
            return tuple(from_plain(v, tensors) for v in value)
        if marker == "$dict":
            return {from_plain(k, tensors): from_plain(v, tensors) for k, v in value}
        if marker == "$history":
            from mmengine.logging.history_buffer import HistoryBuffer

            return HistoryBuffer(value["log"], value["count"], value["max_length"])
    return {k: from_plain(v, tensors) for k, v in obj.items()}


def _distinct(tensors: dict) -> dict:
    """Contiguous CPU tensors that share no memory (safetensors refuses tied weights and views)."""
    seen: set[tuple[int, int]] = set()
    out = {}
    for name, t in tensors.items():
        t = t.detach().cpu()
        where = (t.untyped_storage().data_ptr(), t.storage_offset()) if t.numel() else (0, id(t))
        if not t.is_contiguous():
            t = t.contiguous()  # a fresh copy
        elif where in seen:
            t = t.clone()
        out[name] = t
        seen.add(where)
    return out


def write_store(checkpoint: dict, folder: Path) -> None:
    """Write `checkpoint` (an mmengine checkpoint dict) into the new folder `folder`; the caller renames
    the folder into place (`xtune.fileio.commit`), so a crash never leaves half a checkpoint."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    model = dict(checkpoint.get("state_dict") or {})
    rest = {k: v for k, v in checkpoint.items() if k != "state_dict"}
    state_tensors: dict = {}

    def stash(key, t):
        state_tensors[key] = t
        return {"$tensor": key}

    state = to_plain(rest, stash)
    save_file(_distinct(model), str(folder / MODEL_FILE))
    save_file(_distinct(state_tensors), str(folder / TENSOR_FILE))
    document = {"format": FORMAT, "version": VERSION, "model_tensors": MODEL_FILE, "state": state}
    (folder / STATE_FILE).write_text(json.dumps(document), encoding="utf-8")


def _document_state(folder: Path) -> dict:
    from xtune.errors import UsageError

    try:
        document = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"checkpoint {str(folder)!r}: {STATE_FILE} is unreadable ({exc})",
                         hint="resume from or convert an earlier iter_N.pth") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT or \
            not isinstance(document.get("state"), dict):
        raise UsageError(f"checkpoint {str(folder)!r}: {STATE_FILE} is not an xtune checkpoint record")
    if document.get("version", 0) > VERSION:
        raise UsageError(f"checkpoint {str(folder)!r} was written by a newer xtune (format version "
                         f"{document['version']})", hint="upgrade xtune to read it")
    return document["state"]


def read_store_state(folder: Path) -> dict:
    """The checkpoint's run state (meta, step, layout) without loading any tensor: where a tensor was
    stored, None."""
    return from_plain(_document_state(folder), collections.defaultdict(lambda: None))


def verify_store(folder: Path) -> None:
    """The record parses and both tensor files are whole (their headers cover their sizes), without reading
    any tensor: what `--resume` checks before the model loads."""
    from safetensors import SafetensorError, safe_open

    from xtune.errors import UsageError

    read_store_state(folder)
    for name in (MODEL_FILE, TENSOR_FILE):
        try:
            with safe_open(str(folder / name), framework="pt") as handle:
                handle.keys()
        except (SafetensorError, OSError) as exc:
            raise UsageError(f"checkpoint {str(folder)!r}: {name} is truncated or unreadable ({exc})",
                             hint="resume from an earlier iter_N.pth") from None


def read_store(folder: Path, *, with_state_tensors: bool = True) -> dict:
    """The mmengine checkpoint dict stored in `folder` (model tensors under `state_dict`)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from xtune.errors import UsageError

    state = _document_state(folder)
    try:
        model = load_file(str(folder / MODEL_FILE))
        tensors = load_file(str(folder / TENSOR_FILE)) if with_state_tensors else {}
    except (SafetensorError, OSError) as exc:
        raise UsageError(f"checkpoint {str(folder)!r}: its tensors are unreadable ({exc})",
                         hint="resume from or convert an earlier iter_N.pth") from None
    if not with_state_tensors:
        state = {k: v for k, v in state.items() if k in ("meta", "message_hub")}
    try:
        checkpoint = from_plain(state, tensors)
    except KeyError as exc:
        raise UsageError(f"checkpoint {str(folder)!r}: {TENSOR_FILE} lacks the tensor {exc}") from None
    checkpoint["state_dict"] = model
    return checkpoint
