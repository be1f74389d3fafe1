"""Processed data sets cached on disk by a fingerprint of everything that shapes them.

The fingerprint covers the source content, the dataset map and its columns, the template entry,
the tokenizer (vocabulary, special tokens), max_length, packing and the other settings, and xtune's
data-format version. Anything else would hand a stale cache to a changed recipe. Writes go to a
temporary folder that is renamed into place, so an interrupted run never leaves half a cache.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from xtune.fileio import atomic_path, cache_dir

# Bump when the processed rows change meaning (labels, packing rule ...): old caches are then unused.
FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    return cache_dir("datasets")


def tokenizer_fingerprint(tokenizer) -> str:
    """A digest of what decides tokenization: the backend model, special tokens, class and template."""
    digest = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        vocab = tokenizer.get_vocab()
        digest.update(json.dumps(sorted(vocab.items())).encode())
    digest.update(type(tokenizer).__name__.encode())
    digest.update(json.dumps(tokenizer.special_tokens_map, sort_keys=True, default=str).encode())
    digest.update(json.dumps([tokenizer.bos_token_id, tokenizer.eos_token_id,
                              tokenizer.pad_token_id]).encode())
    return digest.hexdigest()


def fingerprint(parts: dict[str, Any]) -> str:
    text = json.dumps({"format_version": FORMAT_VERSION, **parts}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def load(cache_dir: Path, key: str):
    """The cached data set for `key`, or None."""
    path = Path(cache_dir) / key
    if not (path / "dataset_info.json").is_file():
        return None
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except Exception:  # a cache from another datasets version or a damaged one: rebuild it
        return None


def save(dataset, cache_dir: Path, key: str, progress: bool = True) -> Path:
    import datasets

    final = Path(cache_dir) / key
    # Another process that finished the same key first keeps its copy (readers may already use it).
    with atomic_path(final, folder=True, keep_existing=True) as tmp:
        enabled = datasets.is_progress_bar_enabled()
        if not progress:
            datasets.disable_progress_bars()
        try:
            dataset.save_to_disk(str(tmp))
        finally:
            if enabled:
                datasets.enable_progress_bars()
    return final
