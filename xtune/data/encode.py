"""Conversations -> template segments -> token ids, and the fingerprint and build report of processed data.

Shared by the SFT pipeline (`xtune.data.pipeline`) and the preference one (`xtune.data.preference`), so both
render with the same template path (the tokenizer's own special tokens) and tokenize the same way.
"""

from __future__ import annotations

import json
from typing import Any

from xtune.data import cache
from xtune.data.records import dataset_map_entry
from xtune.data.sources import collect
from xtune.errors import ConfigError, DataError, UsageError

REPORT_PREFIX = "xtune-build-report:"


def render_conversations(conversations, wheres, template_name: str | None, tokenizer=None, *,
                         registry) -> list[list[dict]]:
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
            segments = render_segments(template, chat, registry=registry, **special)
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


def fingerprint_for(cfg: dict, tokenizer, source_print: str, *, registry) -> str:
    """The cache key of processed data: the source, the dataset map and template entries of `registry`, the
    tokenizer and the settings that change the rows."""
    template = cfg.get("prompt_template")
    template_entry = (registry.chat_templates.get(template).to_dict() if template in registry.chat_templates
                      else template)
    map_entry = dataset_map_entry(cfg, registry)
    keys = ("dataset_map", "max_length", "pack_to_max_length", "system", "train_on", "shuffle_before_pack",
            "seed", "columns", "self_cognition_name", "self_cognition_author", "skip_bad_records",
            "ignore_images")
    return cache.fingerprint(
        {"source": source_print, "map": map_entry, "template": template_entry,
         "tokenizer": cache.tokenizer_fingerprint(tokenizer), **{k: cfg.get(k) for k in keys}})


def tokenize_segments(segments, cfg: dict, tokenizer, key: str, progress: bool) -> dict[str, list]:
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


def build_report(dataset) -> dict[str, Any]:
    """The report build_train_dataset attached to `dataset` ({} for a data set built elsewhere)."""
    text = getattr(dataset.info, "description", "") or ""
    return json.loads(text[len(REPORT_PREFIX) :]) if text.startswith(REPORT_PREFIX) else {}
