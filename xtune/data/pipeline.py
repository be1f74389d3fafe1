"""`build_train_dataset(cfg, tokenizer, registry=...)`: a recipe's `train_dataset` settings -> training rows.

source -> dataset map -> conversation -> template segments -> input_ids + labels -> (packing).
Conversion and rendering run in this process and check every record first, so bad data is
reported all together with file, line and field before any tokenizing starts; tokenizing (the
expensive part) runs through `datasets.map` with `num_proc` workers. The result is cached by
fingerprint (xtune.data.cache), and a build report (records, dropped, truncated, fill ratio) rides
along in the data set's `info.description` so the engine's dataset-info hook can show it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xtune.data import cache
from xtune.data.encode import (  # noqa: F401  (render_conversations, build_report: this module's names too)
    REPORT_PREFIX,
    build_report,
    fingerprint_for,
    render_conversations,
    tokenize_segments,
)
from xtune.data.records import check_settings, load_conversations, local_source_print  # noqa: F401
from xtune.data.tokenize import clip_segments
from xtune.errors import DataError


def build_train_dataset(cfg: dict, tokenizer, *, registry, progress: bool = True,
                        use_cache: bool = True):
    """Training rows for a recipe's `train_dataset` dict: input_ids, labels (+ position_ids when packed).
    A preference objective's rows (`rows` = pairs, unpaired, prompts) come from `xtune.data.preference`."""
    if cfg.get("rows", "sft") != "sft":
        from xtune.data.preference import build_preference_dataset

        return build_preference_dataset(cfg, tokenizer, registry=registry, progress=progress,
                                        use_cache=use_cache)
    cache_dir = Path(cfg.get("cache_dir") or cache.default_cache_dir())
    if use_cache:
        # Local files are fingerprinted by content without parsing them, so a warm run skips
        # converting and checking every record (they were checked when the cache was written).
        check_settings(cfg)
        early_print = local_source_print(cfg, registry=registry)
        if early_print is not None:
            cached = cache.load(cache_dir, fingerprint_for(cfg, tokenizer, early_print, registry=registry))
            if cached is not None:
                return cached
    skipped: list[str] = []
    conversations, wheres, source_print = load_conversations(cfg, registry=registry, progress=progress,
                                                             skipped=skipped)
    key = fingerprint_for(cfg, tokenizer, source_print, registry=registry)
    if use_cache:
        cached = cache.load(cache_dir, key)
        if cached is not None:
            return cached
    segments = render_conversations(conversations, wheres, cfg.get("prompt_template"), tokenizer,
                                    registry=registry)
    segments = [clip_segments(s, int(cfg.get("max_length") or 2048)) for s in segments]
    columns = tokenize_segments(segments, cfg, tokenizer, key, progress)
    result, report = build_rows(columns, cfg)
    report.update(records=len(conversations), skipped_bad_records=len(skipped))
    result.info.description = REPORT_PREFIX + json.dumps(report)
    if use_cache:
        cache.save(result, cache_dir, key, progress=progress and len(result) >= 2000)
    return result


def build_rows(columns: dict[str, list], cfg: dict):
    """The kept samples as the training data set (packed into rows when the recipe packs), and the report."""
    import datasets

    max_length = int(cfg.get("max_length") or 2048)
    status = columns["status"]
    report: dict[str, Any] = {"dropped": status.count("dropped"), "truncated": status.count("truncated"),
                              "max_length": max_length, "packed": bool(cfg.get("pack_to_max_length"))}
    kept = [i for i, s in enumerate(status) if s != "dropped"]
    if not kept:
        raise DataError(
            f"every one of the {len(status)} samples lost all trained tokens when truncated to "
            f"max_length {max_length}",
            hint="raise max_length",
        )
    ids, labels = [columns["input_ids"][i] for i in kept], [columns["labels"][i] for i in kept]
    extra = {k: [v[i] for i in kept] for k, v in columns.items()
             if k not in ("input_ids", "labels", "status")}  # e.g. the images of each sample
    if cfg.get("pack_to_max_length"):
        from xtune.data.packing import pack_rows

        seed = cfg.get("seed", 0) if cfg.get("shuffle_before_pack", True) else None
        rows = pack_rows(ids, labels, max_length, seed=seed, extra=extra)
        report["fill_ratio"] = sum(map(len, rows["input_ids"])) / (len(rows["input_ids"]) * max_length)
        result = datasets.Dataset.from_dict(rows)
    else:
        result = datasets.Dataset.from_dict({"input_ids": ids, "labels": labels, **extra})
    report["rows"] = len(result)
    return result, report
