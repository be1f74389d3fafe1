"""Where a model lives: a local folder, a local GGUF file, a ModelScope id or a Hugging Face hub id.

Local paths are checked here, before anything loads, so that a typo, a file given for a folder, an empty
folder or a symlink loop is one clear error instead of a library's message about sentencepiece or JSON.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from pathlib import Path

from xtune.errors import ConfigError
from xtune.fileio import looks_local

MODEL_SUFFIXES = (".gguf",)


@dataclass(frozen=True)
class ModelSource:
    """Where to load from: a folder or hub id for `from_pretrained`, plus a GGUF file name inside it."""

    path: str
    gguf_file: str | None = None

    @property
    def is_local(self) -> bool:
        return Path(self.path).is_dir()


def _check_local(name: str, local: Path) -> ModelSource:
    try:
        local.resolve(strict=True)
    except RuntimeError:  # how Python < 3.13 reports a symlink loop
        raise ConfigError(f"model path {name!r} is a symlink loop") from None
    except OSError as exc:
        what = "is a symlink loop" if exc.errno == errno.ELOOP else "does not exist"
        raise ConfigError(f"model path {name!r} {what}") from None
    if local.is_file():
        if local.suffix == ".gguf":
            check_gguf_file(local, name)
            return ModelSource(str(local.parent), local.name)
        raise ConfigError(f"model path {name!r} is a file, not a model folder",
                          hint="give the folder that holds config.json (or a .gguf file)")
    if not (local / "config.json").is_file():
        ggufs = sorted(local.glob("*.gguf"))
        if len(ggufs) == 1:
            check_gguf_file(ggufs[0], str(ggufs[0]))
            return ModelSource(str(local), ggufs[0].name)
        _refuse_adapter_folder(name, local)
        what = "is empty" if not any(local.iterdir()) else "has no config.json"
        raise ConfigError(f"model folder {name!r} {what}",
                          hint="point at a Hugging Face model folder (config.json + weights) or a .gguf file")
    return ModelSource(str(local))


def _refuse_adapter_folder(name: str, local: Path) -> None:
    """A PEFT adapter folder given where a full model belongs (`xtune chat WORK_DIR/hf`): say what it is and
    how it is used, on the base its adapter_config.json names."""
    from xtune.models.adapters import adapter_base, is_adapter_folder

    if is_adapter_folder(local):
        base = adapter_base(local) or "BASE"
        raise ConfigError(f"model folder {name!r} is a PEFT adapter (trained on {base!r}), not a full model",
                          hint=f"run xtune chat {base} --adapter {name}, or merge it into its base: "
                               f"xtune convert merge {base} {name} OUT")


def check_gguf_file(path: Path, name: str) -> None:
    """Refuse a truncated or corrupt GGUF file before a loader fails on it with a bare `unpack_from` or
    `reshape` error: its header must parse, and the file must hold all the tensor data it lists."""
    try:
        from transformers.integrations.gguf.reader import GgufHeader
    except ImportError:  # an older transformers: its loader reports what it finds
        return
    size = path.stat().st_size
    try:
        header = GgufHeader.from_file(str(path)) if size else None
    except (struct.error, IndexError, UnicodeDecodeError, OverflowError, KeyError):
        header = None
    except ValueError as exc:  # not GGUF at all, or a version or tensor type the reader does not know
        raise ConfigError(f"GGUF file {name!r} cannot be read: {str(exc).splitlines()[0][:200]}") from None
    if header is None:
        raise ConfigError(f"GGUF file {name!r} is truncated or corrupt: its header ends early or is garbled "
                          f"({size} bytes)", hint="download or convert it again")
    end = header.data_start + max((t.offset + t.nbytes for t in header.tensors), default=0)
    if size < end:
        raise ConfigError(f"GGUF file {name!r} is truncated: it holds {size} bytes, its tensors end at byte "
                          f"{end}", hint="download or convert it again")


def resolve_source(name_or_path: str, source: str = "auto") -> ModelSource:
    """A local GGUF file, a local folder, a ModelScope id (`modelscope://org/name` or source='modelscope',
    downloaded with ModelScope's client into its cache) or a Hugging Face hub id, in that order."""
    name = str(name_or_path)
    if not name.strip():
        raise ConfigError("the model path is empty", hint="set pretrained_model_name_or_path")
    if name.startswith("modelscope://"):
        name, source = name[len("modelscope://"):], "modelscope"
    local = Path(name).expanduser()
    if source == "local" or looks_local(name, MODEL_SUFFIXES) or local.is_symlink():
        return _check_local(name, local)
    if source == "modelscope":
        from modelscope import snapshot_download

        return ModelSource(snapshot_download(name))
    return ModelSource(name)
