"""Where a model lives: a local folder, a local GGUF file, a ModelScope id or a Hugging Face hub id.

Local paths are checked here, before anything loads, so that a typo, a file given for a folder, an empty
folder or a symlink loop is one clear error instead of a library's message about sentencepiece or JSON.
"""

from __future__ import annotations

import errno
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
            return ModelSource(str(local.parent), local.name)
        raise ConfigError(f"model path {name!r} is a file, not a model folder",
                          hint="give the folder that holds config.json (or a .gguf file)")
    if not (local / "config.json").is_file():
        ggufs = sorted(local.glob("*.gguf"))
        if len(ggufs) == 1:
            return ModelSource(str(local), ggufs[0].name)
        what = "is empty" if not any(local.iterdir()) else "has no config.json"
        raise ConfigError(f"model folder {name!r} {what}",
                          hint="point at a Hugging Face model folder (config.json + weights) or a .gguf file")
    return ModelSource(str(local))


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
