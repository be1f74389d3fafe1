"""Preference data: records -> checked pairs (KTO items, PPO prompts) -> rendered sequences -> training rows.

Each pair becomes two sequences, prompt + chosen and prompt + rejected, rendered by the recipe's chat template
and tokenized exactly as SFT conversations are (`render_conversations` with the tokenizer's own special
tokens, one batched tokenization), so prompt and answer tokens are those of training and chat; only the final
answer is trained. A pair stays in one row, chosen first, positions restarting at 0 for each sequence (no
attention between them), and packing fills rows of 2 x max_length tokens with whole pairs. Objectives read
sample k of a batch as chosen when k is even, rejected when odd. KTO items become (completion, KL completion)
units the same way: the KL completion is the previous record's answer to this prompt (TRL's mismatched
pairs for the KL estimate). Prompts (PPO, GRPO) are rows of the rendered prompt with the generation prompt,
plus the record's other columns as JSON (`columns`: what GRPO's reward functions read, e.g. a math answer;
PPO ignores them).
"""

from __future__ import annotations

import json
from pathlib import Path

from xtune.data import cache
from xtune.data.conversation import RecordError, message, validate
from xtune.data.prompt_formats import checked_columns
from xtune.data.records import check_settings, load_records, local_source_print
from xtune.data.tokenize import IGNORE_INDEX
from xtune.errors import ConfigError, DataError

ROWS = ("pairs", "unpaired", "prompts")
SAMPLE_ROLES = {"pairs": ("chosen", "rejected"), "unpaired": ("completion", "kl completion"),
                "prompts": ("prompt",)}
FORMAT_VERSION = 2  # 2: prompt rows carry the records' columns


def _prompt_of(item, system: str) -> list[dict]:
    """The prompt of a pair, a KTO item or an SFT conversation (cut before its last answer)."""
    if isinstance(item, dict):
        prompt = item["prompt"]
    else:
        last = max((i for i, m in enumerate(item) if m["role"] == "assistant"), default=len(item))
        prompt = item[:last]
    prompt = [{**m, "loss": False} for m in prompt]
    if system and not (prompt and prompt[0]["role"] == "system"):
        prompt.insert(0, message("system", system))
    body = [m for m in prompt if m["role"] != "system"]
    if not body or prompt[-1]["role"] not in ("user", "tool"):
        raise RecordError("the prompt must be a conversation that ends on a user turn", "prompt")
    return prompt


def _answer_of(answer: list[dict], field: str) -> list[dict]:
    if not answer or any(m["role"] != "assistant" for m in answer):
        raise RecordError("must be the assistant's answer that continues the prompt", field)
    return [{**m, "loss": True} for m in answer]


def check_item(item, *, system: str, train_on: str, map_name: str, rows: str, required: tuple[str, ...] = ()):
    """A converted record as the `rows` kind needs it, checked by the SFT rules and the preference ones;
    prompts keep the record's columns for the reward functions (`required`: those they read)."""
    if rows == "prompts":
        return {"prompt": _prompt_of(item, system), "columns": checked_columns(item, required)}
    if not isinstance(item, dict) or (rows == "pairs" and "chosen" not in item):
        raise RecordError(f"the {map_name} format yields no preference pairs (use a preference dataset map, "
                          "e.g. sharegpt_preference, preference, hh_rlhf)")
    prompt = _prompt_of(item, system)
    if "chosen" not in item:
        completion = _answer_of(item["completion"], "completion")
        validate(prompt + completion)
        return {"prompt": prompt, "completion": completion, "label": bool(item["label"])}
    chosen, rejected = _answer_of(item["chosen"], "chosen"), _answer_of(item["rejected"], "rejected")
    if [m["content"] for m in chosen] == [m["content"] for m in rejected]:
        raise RecordError("is the same answer as rejected (a pair must differ)", "chosen")
    validate(prompt + chosen)
    validate(prompt + rejected)
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def load_items(cfg: dict, *, registry, progress: bool = True, skipped: list[str] | None = None):
    """(items, wheres, fingerprint) for `cfg['rows']`; KTO trained on pairs takes each side as one item."""
    rows = cfg["rows"]
    required = required_columns(cfg)

    def check(item, **settings):
        return check_item(item, rows=rows, required=required, **settings)

    items, wheres, source_print = load_records(cfg, check, registry=registry, progress=progress,
                                               skipped=skipped)
    if rows == "unpaired" and items and "chosen" in items[0]:
        items = [{"prompt": i["prompt"], "completion": i[side], "label": side == "chosen"}
                 for i in items for side in ("chosen", "rejected")]
        wheres = [f"{w} ({side})" for w in wheres for side in ("chosen", "rejected")]
    return items, wheres, source_print


def required_columns(cfg: dict) -> tuple[str, ...]:
    """`train_dataset.required_columns`: the record columns the recipe's reward functions read, which every
    prompt record must carry (a record without one is bad data, named like any other)."""
    value = cfg.get("required_columns") or ()
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not all(isinstance(name, str) for name in value):
        raise ConfigError(f"train_dataset.required_columns must be a list of column names, got {value!r}")
    return tuple(value)


def sequences(items: list[dict], rows: str) -> list[list[dict]]:
    """The conversations to render, unit by unit (see the module docstring for the order); a prompt item is
    its prompt alone."""
    if rows == "prompts":
        return [item["prompt"] for item in items]
    if rows == "pairs":
        return [item["prompt"] + item[side] for item in items for side in ("chosen", "rejected")]
    return [seq for i, item in enumerate(items) for seq in
            (item["prompt"] + item["completion"], item["prompt"] + items[i - 1]["completion"])]


def build_preference_dataset(cfg: dict, tokenizer, *, registry, progress: bool = True,
                             use_cache: bool = True):
    """Training rows for a preference objective: input_ids, labels, position_ids (+ unit_labels for KTO, +
    prompt_messages and columns for prompts), cached by fingerprint like SFT data."""
    from xtune.data.encode import fingerprint_for

    rows = cfg["rows"]
    if rows not in ROWS:
        raise DataError(f"train_dataset.rows must be one of sft, {', '.join(ROWS)}, got {rows!r}")
    cache_dir = Path(cfg.get("cache_dir") or cache.default_cache_dir())

    def key_for(source_print: str) -> str:
        return cache.fingerprint({"data": fingerprint_for(cfg, tokenizer, source_print, registry=registry),
                                  "rows": rows, "preference_format": FORMAT_VERSION,
                                  "required_columns": required_columns(cfg)})

    check_settings(cfg)
    early = local_source_print(cfg, registry=registry) if use_cache else None
    cached = cache.load(cache_dir, key_for(early)) if early is not None else None
    if cached is not None:
        return cached
    skipped: list[str] = []
    items, wheres, source_print = load_items(cfg, registry=registry, progress=progress, skipped=skipped)
    key = key_for(source_print)
    build = _prompt_rows if rows == "prompts" else _unit_rows
    result, report = build(items, wheres, cfg, tokenizer, registry, key, progress)
    report.update(records=len(items), skipped_bad_records=len(skipped), rows_kind=rows,
                  sample_roles=list(SAMPLE_ROLES[rows]))
    from xtune.data.encode import REPORT_PREFIX

    result.info.description = REPORT_PREFIX + json.dumps(report)
    if use_cache:
        cache.save(result, cache_dir, key, progress=progress and len(result) >= 2000)
    return result


def _unit_rows(items, wheres, cfg, tokenizer, registry, key, progress):
    """Pairs / KTO units tokenized, truncated per sequence to max_length, and put into rows."""
    import datasets

    from xtune.data.encode import render_conversations, tokenize_segments
    from xtune.data.packing import pack_units
    from xtune.data.tokenize import clip_segments

    rows = cfg["rows"]
    convs = sequences(items, rows)
    segments = render_conversations(convs, [w for w in wheres for _ in (0, 1)], cfg.get("prompt_template"),
                                    tokenizer, registry=registry)
    segments = [clip_segments(s, int(cfg.get("max_length") or 2048)) for s in segments]
    columns = tokenize_segments(segments, cfg, tokenizer, key, progress)
    status = columns["status"]
    keep = [u for u in range(len(items)) if "dropped" not in status[2 * u: 2 * u + 2]]
    max_length = int(cfg.get("max_length") or 2048)
    if not keep:
        raise DataError(f"every one of the {len(items)} {rows} lost all trained tokens when truncated to "
                        f"max_length {max_length}", hint="raise max_length")
    units = [[(columns["input_ids"][s], columns["labels"][s]) for s in (2 * u, 2 * u + 1)] for u in keep]
    packed = bool(cfg.get("pack_to_max_length"))
    if packed:
        seed = cfg.get("seed", 0) if cfg.get("shuffle_before_pack", True) else None
        table = pack_units(units, 2 * max_length, seed=seed)
    else:
        table = {"input_ids": [], "labels": [], "position_ids": [], "units": []}
        for i, unit in enumerate(units):
            table["input_ids"].append(unit[0][0] + unit[1][0])
            table["labels"].append(unit[0][1] + unit[1][1])
            table["position_ids"].append(list(range(len(unit[0][0]))) + list(range(len(unit[1][0]))))
            table["units"].append([i])
    members = table.pop("units")
    if rows == "unpaired":
        table["unit_labels"] = [[int(items[keep[u]]["label"]) for u in row] for row in members]
    # Counted in sequences, as "samples kept" is: a dropped pair drops both of its sequences.
    report = {"dropped": 2 * (len(items) - len(keep)), "max_length": max_length, "packed": packed,
              "truncated": sum(status[2 * u: 2 * u + 2].count("truncated") for u in keep),
              "units": len(keep), "rows": len(table["input_ids"])}
    if packed:
        report["row_length"] = 2 * max_length
        report["fill_ratio"] = sum(map(len, table["input_ids"])) / (len(table["input_ids"]) * 2 * max_length)
    return datasets.Dataset.from_dict(table), report


def _prompt_rows(items, wheres, cfg, tokenizer, registry, key, progress):
    """Prompts: the rendered prompt with the generation prompt, as chat renders it, its messages and its
    record's columns (JSON); longer than max_length are dropped (cutting a prompt would cut its template)."""
    import datasets

    from xtune.templates import get_template, render_prompt

    template = get_template(cfg.get("prompt_template"), registry)
    max_length = int(cfg.get("max_length") or 2048)
    texts = [render_prompt(template, item["prompt"], tokenizer, registry=registry) for item in items]
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    keep = [i for i, ids in enumerate(encoded) if len(ids) <= max_length]
    if not keep:
        raise DataError(f"every prompt is longer than max_length {max_length}", hint="raise max_length")
    table = {"input_ids": [list(encoded[i]) for i in keep],
             "labels": [[IGNORE_INDEX] * len(encoded[i]) for i in keep],
             "prompt_messages": [json.dumps(_plain(items[i]["prompt"]), ensure_ascii=False) for i in keep],
             "columns": [json.dumps(items[i]["columns"], ensure_ascii=False) for i in keep]}
    report = {"dropped": len(items) - len(keep), "truncated": 0, "max_length": max_length, "packed": False,
              "rows": len(keep)}
    return datasets.Dataset.from_dict(table), report


def _plain(messages: list[dict]) -> list[dict]:
    return [{"role": m["role"], "content": m["content"]} for m in messages]
