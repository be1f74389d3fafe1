"""Opening a checkpoint runs no code unless the user says they trust it.

A pickle is a program: `torch.load(..., weights_only=False)` on a shared `iter_N.pth` or DeepSpeed folder
runs whatever its author put in it. xtune reads every pickled checkpoint file with torch's restricted
(`weights_only`) unpickler, allowing exactly the classes xtune, mmengine and DeepSpeed write:

- mmengine's `HistoryBuffer` and the numpy array / scalar / dtype reconstructors its scalars need (older
  xtune checkpoints; new ones are safetensors + JSON, `xtune.checkpoint.store`);
- DeepSpeed's loss scaler, ZeRO stage enum and tensor-fragment address (its optimizer shards);
- in place of `builtins.getattr` (which a HistoryBuffer pickle calls to name its statistics methods),
  a function that resolves only `HistoryBuffer.min / max / mean / current`: an unrestricted getattr would
  reach `os.system` through any allowed module.

DeepSpeed's engine and `zero_to_fp32` unpickle fully and cannot be told otherwise, so xtune first reads
those files with the restricted unpickler (memory-mapped: the tensors are not read) and refuses a file
that needs more. A pickle does the same thing whichever unpickler reads it, so a file that passed builds
the same allowed objects when DeepSpeed reads it again. `--trust-checkpoint` (the environment variable
XTUNE_TRUST_CHECKPOINT=1, which the CLI sets and the launcher's processes inherit) skips the check.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

from xtune.errors import UsageError

TRUST_ENV = "XTUNE_TRUST_CHECKPOINT"
TRUST_HINT = ("it may run code when opened; if you trust whoever made it, pass --trust-checkpoint, "
              "else resume or convert a checkpoint you trained")
_HISTORY_METHODS = ("min", "max", "mean", "current")


def trusted() -> bool:
    return os.environ.get(TRUST_ENV, "") not in ("", "0")


def _history_statistic(owner, name):
    """Stands in for `builtins.getattr` while unpickling: only `HistoryBuffer.<statistic>` resolves."""
    from mmengine.logging.history_buffer import HistoryBuffer

    if owner is HistoryBuffer and name in _HISTORY_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(f"getattr({getattr(owner, '__name__', type(owner).__name__)}, {name!r}) is "
                                 "not a HistoryBuffer statistic")


@functools.cache
def allowed_globals() -> tuple:
    """Exactly the classes and functions xtune, mmengine and DeepSpeed checkpoints need."""
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer

    numpy_core = np._core.multiarray
    dtypes = [type(np.dtype(t)) for t in ("float64", "float32", "float16", "int64", "int32", "bool")]
    found: list = [HistoryBuffer, np.ndarray, np.dtype, *dtypes, (_history_statistic, "builtins.getattr"),
                   numpy_core._reconstruct, numpy_core.scalar,
                   (numpy_core._reconstruct, "numpy.core.multiarray._reconstruct"),  # numpy 1.x pickles
                   (numpy_core.scalar, "numpy.core.multiarray.scalar")]
    try:
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum
        from deepspeed.utils.tensor_fragment import fragment_address

        found += [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address]
    except ImportError:  # pragma: no cover - deepspeed is a dependency
        pass
    return tuple(found)


def _refusal(path: Path, exc: Exception) -> UsageError:
    text = str(exc)
    named = re.search(r"GLOBAL (\S+)", text) or re.search(r"(getattr\([^)]*\))", text)
    what = f" ({named.group(1).rstrip('.')})" if named else ""
    return UsageError(f"checkpoint file {str(path)!r} needs more than xtune's restricted loader "
                      f"allows{what}", hint=TRUST_HINT)


def load_pickled(path: str | Path, *, mmap: bool = False, restricted: bool | None = None) -> Any:
    """`torch.load` of one pickled checkpoint file: restricted unless the user trusts checkpoints (or
    `restricted` says so either way); a file that needs more, or is not a PyTorch checkpoint at all, is
    one UsageError naming it."""
    import torch

    path = Path(path)
    restricted = not trusted() if restricted is None else restricted
    try:
        if not restricted:
            return torch.load(path, map_location="cpu", weights_only=False)
        with torch.serialization.safe_globals(list(allowed_globals())):
            return torch.load(path, map_location="cpu", weights_only=True,
                              mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        if "Weights only load failed" in str(exc) or "HistoryBuffer statistic" in str(exc):
            raise _refusal(path, exc) from None
        raise _corrupt(path, exc) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise _corrupt(path, exc) from None


def _corrupt(path: Path, exc: Exception) -> UsageError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UsageError(f"checkpoint {str(path)!r} is corrupt or not a PyTorch checkpoint: {first}")


def check_deepspeed_folder(folder: str | Path) -> None:
    """Every pickled file of a DeepSpeed checkpoint folder passes the restricted unpickler, before
    DeepSpeed (which unpickles fully) opens any of them."""
    if trusted():
        return
    for file in sorted(Path(folder).glob("*.pt")):
        load_pickled(file, mmap=True)


def note_old_format(path: str | Path) -> None:
    import logging

    logging.getLogger("xtune").info(
        "%s is in the older pickled checkpoint format (new ones are safetensors + JSON); read with torch's "
        "restricted unpickler", path)


@contextlib.contextmanager
def trusting(enabled: bool):
    """While a command runs with `--trust-checkpoint`: the environment variable set (processes the
    launcher starts inherit it), put back afterwards."""
    before = os.environ.get(TRUST_ENV)
    if enabled:
        os.environ[TRUST_ENV] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TRUST_ENV, None)
        else:
            os.environ[TRUST_ENV] = before


def check_weight_files(folder: str | Path | None) -> None:
    """The pickled weight files of a model or adapter folder (`pytorch_model*.bin`, `adapter_model.bin`)
    pass the restricted unpickler, so that a crafted one is named in one line before transformers or
    peft load it (they use `weights_only` too, but fail with a message that names no file)."""
    if folder is None or not Path(folder).is_dir():
        return
    for file in sorted(Path(folder).glob("*.bin")) + sorted(Path(folder).glob("*.pt")):
        if file.name.startswith(("pytorch_model", "adapter_model", "model")):
            try:
                load_pickled(file, mmap=True, restricted=True)  # transformers reads them restricted too
            except UsageError as exc:
                raise UsageError(exc.message, hint="convert it to safetensors with a tool you trust, or use "
                                 "a model or adapter saved as safetensors") from None
