"""`build_train_dataset(cfg, tokenizer)`: a recipe's `train_dataset` settings -> training rows.

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
from xtune.data.images import has_images
from xtune.data.records import (
    check_settings,
    dataset_map_entry,
    load_conversations,
    local_source_print,
    registry_or_default,
)
from xtune.data.sources import collect
from xtune.data.tokenize import clip_segments
from xtune.errors import ConfigError, DataError, UsageError

REPORT_PREFIX = "xtune-build-report:"


def render_conversations(conversations, wheres, template_name: str | None, tokenizer=None,
                         registry=None) -> list[list[dict]]:
    """Template segments for each conversation ({"text", "train"}); pretraining text is one trained segment.

    With a tokenizer, the template's {bos_token} / {eos_token} are the tokenizer's own (as in chat and the
    exported jinja), so a generic template (alpaca, chatml, default) ends answers with the EOS this model
    actually stops on.
    """
    from xtune.templates import get_template, render_segments, tokenizer_tokens

    template = get_template(template_name, registry) if template_name else None
    special = tokenizer_tokens(tokenizer)
    out, problems = [], []
    for messages, where in zip(conversations, wheres, strict=False):
        if messages[0]["role"] == "text":
            out.append([{"text": messages[0]["content"], "train": True, "pretrain": True}])
            continue
        if template is None:
            raise ConfigError("train_dataset.prompt_template is not set (chat data needs a template)")
        # Templates render system/user/assistant; a tool's answer is shown to the model as a user turn.
        chat = [{**m, "role": "user"} if m["role"] == "tool" else m for m in messages]
        try:
            segments = render_segments(template, chat, **special)
        except UsageError as exc:
            problems.append(f"{where}: {exc}")
            continue
        out.append([{"text": s.text, "train": s.train, "pretrain": False} for s in segments])
    if problems:
        raise DataError(collect(problems))
    return out


def _tokenize_batch(batch: dict, tokenizer, max_length: int) -> dict:
    from xtune.data.tokenize import encode_many, encode_pretrain, finish

    rows = batch["segments"]
    chats = [i for i, segments in enumerate(rows) if not segments[0]["pretrain"]]
    encoded = dict(
        zip(chats, encode_many([[(s["text"], s["train"]) for s in rows[i]] for i in chats], tokenizer),
            strict=True))
    out: dict[str, list] = {"input_ids": [], "labels": [], "status": []}
    for i, segments in enumerate(rows):
        ids, labels = encoded[i] if i in encoded else encode_pretrain(segments[0]["text"], tokenizer)
        done = finish(ids, labels, max_length)
        out["input_ids"].append(done[0] if done else [])
        out["labels"].append(done[1] if done else [])
        out["status"].append("dropped" if done is None else "truncated" if done[2] else "ok")
    return out


def fingerprint_for(cfg: dict, tokenizer, source_print: str, registry=None) -> str:
    reg = registry_or_default(registry)
    template = cfg.get("prompt_template")
    template_entry = (reg.chat_templates.get(template).to_dict() if template in reg.chat_templates
                      else template)
    map_entry = dataset_map_entry(cfg, reg)
    keys = ("dataset_map", "max_length", "pack_to_max_length", "system", "train_on", "shuffle_before_pack",
            "seed", "columns", "self_cognition_name", "self_cognition_author", "skip_bad_records")
    return cache.fingerprint(
        {"source": source_print, "map": map_entry, "template": template_entry,
         "tokenizer": cache.tokenizer_fingerprint(tokenizer), **{k: cfg.get(k) for k in keys}})


def build_train_dataset(cfg: dict, tokenizer, *, registry=None, progress: bool = True,
                        use_cache: bool = True):
    """Training rows for a recipe's `train_dataset` dict: input_ids, labels (+ position_ids when packed)."""
    cache_dir = Path(cfg.get("cache_dir") or cache.default_cache_dir())
    if use_cache:
        # Local files are fingerprinted by content without parsing them, so a warm run skips
        # converting and checking every record (they were checked when the cache was written).
        check_settings(cfg)
        early_print = local_source_print(cfg, registry)
        if early_print is not None:
            cached = cache.load(cache_dir, fingerprint_for(cfg, tokenizer, early_print, registry))
            if cached is not None:
                return cached
    skipped: list[str] = []
    conversations, wheres, source_print = load_conversations(cfg, registry, progress=progress,
                                                             skipped=skipped)
    if has_images(conversations):
        raise ConfigError(f"the data set {cfg.get('data_path') or cfg.get('dataset_map')!r} shows images, "
                          "but the model is a text model",
                          hint="train it with a vision-language model adapter")
    key = fingerprint_for(cfg, tokenizer, source_print, registry)
    if use_cache:
        cached = cache.load(cache_dir, key)
        if cached is not None:
            return cached
    segments = render_conversations(conversations, wheres, cfg.get("prompt_template"), tokenizer, registry)
    segments = [clip_segments(s, int(cfg.get("max_length") or 2048)) for s in segments]
    columns = _tokenize(segments, cfg, tokenizer, key, progress)
    result, report = build_rows(columns, cfg)
    report.update(records=len(conversations), skipped_bad_records=len(skipped))
    result.info.description = REPORT_PREFIX + json.dumps(report)
    if use_cache:
        cache.save(result, cache_dir, key, progress=progress and len(result) >= 2000)
    return result


def _tokenize(segments, cfg: dict, tokenizer, key: str, progress: bool) -> dict[str, list]:
    """input_ids, labels and a status per conversation, tokenized by `datasets.map` (num_proc workers)."""
    import datasets

    num_proc = int(cfg.get("num_proc") or 1)
    table = datasets.Dataset.from_dict({"segments": segments})
    was_enabled = datasets.is_progress_bar_enabled()
    if not progress or len(table) < 2000:
        datasets.disable_progress_bars()
    try:
        tokenized = table.map(_tokenize_batch, batched=True, batch_size=256, remove_columns=["segments"],
                              num_proc=num_proc if num_proc > 1 and len(table) >= num_proc else None,
                              fn_kwargs={"tokenizer": tokenizer,
                                         "max_length": int(cfg.get("max_length") or 2048)},
                              new_fingerprint=f"{key}-tok", desc="Tokenizing")
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    return tokenized.to_dict()  # plain lists: per-row access to a datasets column is slow


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


def build_report(dataset) -> dict[str, Any]:
    """The report build_train_dataset attached to `dataset` ({} for a data set built elsewhere)."""
    text = getattr(dataset.info, "description", "") or ""
    return json.loads(text[len(REPORT_PREFIX) :]) if text.startswith(REPORT_PREFIX) else {}
