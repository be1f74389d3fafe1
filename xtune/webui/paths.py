"""Which files the page may touch: everything under `--root` and xtune's cache, nothing else.

A web page is a remote control for the machine it runs on; a typed `../../etc` or an absolute path must not
turn it into a file browser. Every path from the page goes through `Paths.local` (resolved, symlinks
followed, then checked), and the pickers only list what lies under the allowed folders. Names that are not
paths (hub ids such as `Qwen/Qwen2-0.5B`) pass as names, unless a folder of that name exists outside.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from xtune.errors import UsageError
from xtune.fileio import cache_dir, looks_local

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet", ".xlsx", ".txt")
_SKIP = {".git", ".venv", "venv", "node_modules", "__pycache__", ".cache"}
_MODEL_FILES = {"config.json", "adapter_config.json", "checkpoint.json"}
_RUN_FILES = {"loss_history.json", "plan.json"}  # what `xtune train` writes into a work dir
_MAX_DIRS = 3000  # a huge --root is listed partly, never scanned for minutes


class Paths:
    """The folders the page may read and write: `root` (the default for relative paths) and the cache."""

    def __init__(self, root: str | os.PathLike, extra: list[str | os.PathLike] | None = None):
        self.root = Path(root).expanduser().resolve()
        extras = (
            [cache_dir("").resolve()] if extra is None else [Path(p).expanduser().resolve() for p in extra]
        )
        self.allowed = [self.root, *extras]

    def local(self, text: str, what: str = "path") -> Path:
        """`text` as an absolute path under an allowed folder (relative to root), or a UsageError."""
        text = str(text or "").strip()
        if not text:
            raise UsageError(f"{what}: empty", hint="give a path under the webui root")
        path = Path(text).expanduser()
        path = (path if path.is_absolute() else self.root / path).resolve()
        if not any(path == a or path.is_relative_to(a) for a in self.allowed):
            raise UsageError(
                f"{what} {text!r} is outside the folders this page may use ({self.root}, the xtune cache)",
                hint="start `xtune webui --root DIR` with a root that holds it",
            )
        return path

    def model_or_hub(self, text: str, what: str = "model") -> str:
        """A local folder (confined, made absolute) or a hub id / `modelscope://` name, as `xtune chat`
        and recipes accept them."""
        text = str(text or "").strip()
        if text.startswith(("modelscope://", "ms://")):
            return text
        if looks_local(text) or (self.root / text).exists() or not HUB_ID.fullmatch(text):
            return str(self.local(text, what))
        if Path(text).exists():  # transformers would read a relative folder of that name first
            raise UsageError(
                f"{what} {text!r} names a folder outside the webui root",
                hint="give the folder's path under the root",
            )
        return text

    def shown(self, path: str | os.PathLike) -> str:
        """A path as the page shows it: relative to root when under it."""
        path = Path(path)
        try:
            return str(path.relative_to(self.root)) or "."
        except ValueError:
            return str(path)

    def _walk(self, depth: int):
        seen = 0
        for top in self.allowed:
            if not top.is_dir():
                continue
            for folder, dirs, files in os.walk(top):
                level = len(Path(folder).relative_to(top).parts)
                dirs[:] = sorted(
                    d for d in dirs if d not in _SKIP and not d.startswith(".") and level < depth
                )
                seen += 1
                if seen > _MAX_DIRS:
                    return
                yield Path(folder), dirs, files

    def find_models(self, depth: int = 4) -> list[str]:
        """Model folders (a config.json beside weights) under the allowed folders, for the pickers."""
        found = [
            self.shown(f)
            for f, _, files in self._walk(depth)
            if "config.json" in files and any(n.endswith((".safetensors", ".bin", ".gguf")) for n in files)
        ]
        return sorted(found)

    def find_adapters(self, depth: int = 4) -> list[str]:
        """PEFT adapter folders (WORK_DIR/hf of a LoRA run, `convert pth_to_hf` output)."""
        return sorted(self.shown(f) for f, _, files in self._walk(depth) if "adapter_config.json" in files)

    def find_data(self, depth: int = 3) -> list[str]:
        """Data files (json, jsonl, csv, parquet, xlsx, txt) under the root for the data picker; model,
        adapter, checkpoint and log folders are left out (their json files are not data)."""
        out = []
        for folder, _, files in self._walk(depth):
            if (
                not folder.is_relative_to(self.root)
                or folder.name in ("vis_data", "webui")
                or _MODEL_FILES & set(files)
                or folder.name.endswith(".pth")
            ):
                continue  # the cache holds processed data, not data to train on
            out += [
                self.shown(folder / n)
                for n in files
                if n.lower().endswith(DATA_SUFFIXES) and not n.startswith(".") and n not in _RUN_FILES
            ]
        return sorted(out)
