"""The data pipeline: source -> dataset map -> conversation -> template segments -> tokens -> packing ->
batches.

The engine calls `build_train_dataset(cfg, tokenizer, registry=...)`, `build_collator(cfg, tokenizer)`
and `GlobalBatchSampler` (length-grouped for unpacked data); the tools call `dataset_stats` and
`render_sample`. Names are imported lazily so that importing `xtune.data` (the CLI does) never pulls in
torch or datasets.
"""

from __future__ import annotations

import importlib

_EXPORTS = {"build_train_dataset": "xtune.data.pipeline", "build_report": "xtune.data.pipeline",
            "load_conversations": "xtune.data.pipeline", "build_collator": "xtune.data.collate",
            "Collator": "xtune.data.collate", "GlobalBatchSampler": "xtune.data.sampler",
            "pad_token_id": "xtune.data.collate", "dataset_stats": "xtune.data.inspect",
            "format_stats": "xtune.data.inspect", "render_sample": "xtune.data.inspect",
            "encode_segments": "xtune.data.tokenize", "IGNORE_INDEX": "xtune.data.tokenize",
            "pack_rows": "xtune.data.packing", "cu_seqlens": "xtune.data.packing",
            "load_source": "xtune.data.sources"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'xtune.data' has no attribute {name!r}")
