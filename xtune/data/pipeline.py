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
import os
from importlib import resources
from pathlib import Path
from typing import Any

from xtune.data import cache
from xtune.data.conversation import RecordError, apply_settings, validate
from xtune.data.sources import Source, collect, load_source
from xtune.errors import ConfigError, DataError, UsageError

REPORT_PREFIX = "xtune-build-report:"
SELF_COGNITION_ASSET = "self_cognition.json"


def _registry(registry=None):
    if registry is not None:
        return registry
    from xtune.plugins import get_registry

    return get_registry()


def resolve_map(name: str, registry=None):
    """(converter, options, entry) for a dataset map; `format=` maps reuse their base's converter."""
    from xtune.registry import import_object

    table = _registry(registry).dataset_maps
    if name not in table:
        raise DataError(f"unknown data format / dataset map {name!r} (valid: {', '.join(sorted(table.names()))})")
    entry = table.get(name)
    options = dict(entry.columns)
    base = entry
    while base.format:
        base = table.get(base.format)
        options = {**dict(base.columns), **options}
    if base.combine:
        raise ConfigError(f"dataset map {name!r} is a mixture of {', '.join(base.combine)}; "
                          "it has no converter of its own")
    return import_object(base.convert), options, entry


def default_source(entry) -> str:
    """Where a dataset map's data lives when the recipe's `data_path` is None."""
    if entry.convert and entry.convert.endswith(":self_cognition") and not entry.hub_id:
        return str(resources.files("xtune.data") / "assets" / SELF_COGNITION_ASSET)
    if os.environ.get("XTUNE_DATASET_SOURCE") == "modelscope" and entry.modelscope_id:
        return f"modelscope://{entry.modelscope_id}"
    if entry.hub_id:
        return entry.hub_id
    raise ConfigError(f"dataset map {entry.name!r} has no default source", hint="set data_path in the recipe")


def accepted_options(convert) -> list[str]:
    """The fields (and settings such as sharegpt's tags) a converter reads, from its signature."""
    import inspect

    from xtune.data.formats import SHAREGPT_TAGS

    params = inspect.signature(convert).parameters
    names = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()) and convert.__name__ == "sharegpt":
        names += list(SHAREGPT_TAGS)
    return names


def converter_options(cfg: dict, base_options: dict, convert=None) -> dict:
    """The map's column names, overridden by the recipe's custom `columns` mapping and self-cognition names.

    A `columns` key the converter does not read is an error (a typo would otherwise be ignored).
    """
    options = dict(base_options)
    columns = cfg.get("columns") or {}
    if not isinstance(columns, dict):
        raise ConfigError(f"train_dataset.columns must be a dict of field -> column, got {type(columns).__name__}")
    if convert is not None:
        valid = accepted_options(convert)
        unknown = [k for k in columns if k not in valid]
        if unknown:
            raise ConfigError(f"train_dataset.columns: {', '.join(map(repr, unknown))} is not a field of the "
                              f"{convert.__name__} format (valid: {', '.join(valid)})")
    options.update(columns)
    if cfg.get("self_cognition_name"):
        options["name"] = cfg["self_cognition_name"]
    if cfg.get("self_cognition_author"):
        options["author"] = cfg["self_cognition_author"]
    return options


def load_conversations(cfg: dict, registry=None, *, progress: bool = True,
                       skipped: list[str] | None = None) -> tuple[list, list[str], str]:
    """Every record of the configured source as a checked conversation: (conversations, wheres, fingerprint).

    Raises one DataError listing every bad record (file, line, field). With the recipe switch
    `skip_bad_records=True` bad records are left out instead, each one logged as a warning and
    appended to `skipped`, so the build report counts them.
    """
    check_settings(cfg)
    parts = _parts(cfg, registry)
    conversations, wheres, problems, prints = [], [], [], []
    for map_name, data_path in parts:
        convert, options, entry = resolve_map(map_name, registry)
        options = converter_options(cfg, options, convert)
        source: Source = load_source(data_path or default_source(entry), config=entry.hub_config,
                                     split=entry.split, data_files=entry.data_files)
        prints.append(source.fingerprint)
        problems += source.problems
        system = cfg.get("system") or entry.system
        for where, record in _progress(source, f"Checking {source.name}", progress):
            try:
                messages = convert(record, **options)
                if messages and messages[0]["role"] != "text":
                    messages = validate(apply_settings(messages, system=system,
                                                       train_on=cfg.get("train_on", "all_turns")))
            except RecordError as exc:
                problems.append(f"{where}: {exc.describe()}")
                continue
            except (TypeError, AttributeError) as exc:  # a record of the wrong shape for this format
                problems.append(f"{where}: not a {map_name} record ({exc})")
                continue
            conversations.append(messages)
            wheres.append(where)
    if problems and cfg.get("skip_bad_records") and conversations:
        import logging

        log = logging.getLogger("xtune.data")
        for problem in problems:
            log.warning("skipped bad record: %s", problem)
        if skipped is not None:
            skipped += problems
    elif problems:
        raise DataError(collect(problems))
    if not conversations:
        raise DataError(f"the data set {cfg.get('data_path') or cfg.get('dataset_map')!r} is empty")
    return conversations, wheres, "|".join(prints)


def check_settings(cfg: dict) -> None:
    """Recipe data settings of the wrong kind, all reported together."""
    from xtune.data.conversation import TRAIN_ON

    problems = []
    if cfg.get("train_on", "all_turns") not in TRAIN_ON:
        problems.append(f"train_dataset.train_on must be one of {', '.join(TRAIN_ON)}, got {cfg['train_on']!r}")
    max_length = cfg.get("max_length", 2048)
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        problems.append(f"train_dataset.max_length must be an integer of at least 2, got {max_length!r}")
    num_proc = cfg.get("num_proc", 1)
    if num_proc is not None and (isinstance(num_proc, bool) or not isinstance(num_proc, int) or num_proc < 1):
        problems.append(f"train_dataset.num_proc must be a positive integer, got {num_proc!r}")
    if cfg.get("system") is not None and not isinstance(cfg.get("system"), str):
        problems.append(f"train_dataset.system must be a string, got {type(cfg['system']).__name__}")
    if problems:
        raise ConfigError("; ".join(problems))


def _parts(cfg: dict, registry) -> list[tuple[str, str | None]]:
    """(map, data_path) pairs: one, or each member of a mixture such as alpaca_enzh."""
    name = cfg.get("dataset_map")
    if not name:
        raise ConfigError("train_dataset.dataset_map is not set")
    table = _registry(registry).dataset_maps
    if name in table and table.get(name).combine:
        if cfg.get("data_path"):
            raise ConfigError(f"dataset map {name!r} mixes {', '.join(table.get(name).combine)} from their own "
                              "sources; data_path cannot replace them", hint="pick one format as dataset_map")
        return [(member, None) for member in table.get(name).combine]
    return [(name, cfg.get("data_path"))]


def _progress(items, desc: str, enabled: bool):
    if not enabled or len(items) < 2000:
        return iter(items)
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=len(items), unit="rec")


def render_conversations(conversations, wheres, template_name: str | None, tokenizer=None) -> list[list[dict]]:
    """Template segments for each conversation ({"text", "train"}); pretraining text is one trained segment.

    With a tokenizer, the template's {bos_token} / {eos_token} are the tokenizer's own, so a generic
    template (alpaca, chatml, default) ends answers with the EOS this model actually stops on.
    """
    from xtune.templates import get_template, render_segments

    template = get_template(template_name) if template_name else None
    special = {"bos_token": getattr(tokenizer, "bos_token", None), "eos_token": getattr(tokenizer, "eos_token", None)}
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
    encoded = dict(zip(chats, encode_many([[(s["text"], s["train"]) for s in rows[i]] for i in chats], tokenizer),
                       strict=True))
    out: dict[str, list] = {"input_ids": [], "labels": [], "status": []}
    for i, segments in enumerate(rows):
        ids, labels = encoded[i] if i in encoded else encode_pretrain(segments[0]["text"], tokenizer)
        done = finish(ids, labels, max_length)
        out["input_ids"].append(done[0] if done else [])
        out["labels"].append(done[1] if done else [])
        out["status"].append("dropped" if done is None else "truncated" if done[2] else "ok")
    return out


def local_source_print(cfg: dict, registry=None) -> str | None:
    """The source part of the cache key when every source is a local path (as load_conversations
    computes it), else None: hub data sets are only fingerprinted once loaded."""
    from xtune.data.sources import MODELSCOPE_PREFIXES, local_fingerprint, looks_local

    prints = []
    for map_name, data_path in _parts(cfg, registry):
        path = data_path or default_source(resolve_map(map_name, registry)[2])
        if path.startswith(MODELSCOPE_PREFIXES) or not looks_local(path):
            return None
        prints.append(local_fingerprint(path))
    return "|".join(prints)


def fingerprint_for(cfg: dict, tokenizer, source_print: str, registry=None) -> str:
    reg = _registry(registry)
    template = cfg.get("prompt_template")
    template_entry = reg.chat_templates.get(template).to_dict() if template in reg.chat_templates else template
    map_entry = reg.dataset_maps.get(cfg["dataset_map"]).to_dict() if cfg["dataset_map"] in reg.dataset_maps else None
    keys = ("dataset_map", "max_length", "pack_to_max_length", "system", "train_on", "shuffle_before_pack",
            "seed", "columns", "self_cognition_name", "self_cognition_author", "skip_bad_records")
    return cache.fingerprint({"source": source_print, "map": map_entry, "template": template_entry,
                              "tokenizer": cache.tokenizer_fingerprint(tokenizer),
                              **{k: cfg.get(k) for k in keys}})


def build_train_dataset(cfg: dict, tokenizer, *, registry=None, progress: bool = True, use_cache: bool = True):
    """Training rows for a recipe's `train_dataset` dict: input_ids, labels (+ position_ids when packed)."""
    import datasets

    max_length = int(cfg.get("max_length") or 2048)
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
    conversations, wheres, source_print = load_conversations(cfg, registry, progress=progress, skipped=skipped)
    key = fingerprint_for(cfg, tokenizer, source_print, registry)
    if use_cache:
        cached = cache.load(cache_dir, key)
        if cached is not None:
            return cached
    segments = render_conversations(conversations, wheres, cfg.get("prompt_template"), tokenizer)
    num_proc = int(cfg.get("num_proc") or 1)
    table = datasets.Dataset.from_dict({"segments": segments})
    was_enabled = datasets.is_progress_bar_enabled()
    if not progress or len(table) < 2000:
        datasets.disable_progress_bars()
    try:
        tokenized = table.map(_tokenize_batch, batched=True, batch_size=256, remove_columns=["segments"],
                              num_proc=num_proc if num_proc > 1 and len(table) >= num_proc else None,
                              fn_kwargs={"tokenizer": tokenizer, "max_length": max_length},
                              new_fingerprint=f"{key}-tok", desc="Tokenizing")
    finally:
        if was_enabled:
            datasets.enable_progress_bars()
    columns = tokenized.to_dict()  # plain lists: per-row access to a datasets column is slow
    status = columns["status"]
    report = {"records": len(conversations), "skipped_bad_records": len(skipped), "dropped": status.count("dropped"),
              "truncated": status.count("truncated"), "max_length": max_length,
              "packed": bool(cfg.get("pack_to_max_length"))}
    kept = [i for i, s in enumerate(status) if s != "dropped"]
    if not kept:
        raise DataError(f"every one of the {len(status)} samples lost all trained tokens when truncated to "
                        f"max_length {max_length}", hint="raise max_length")
    if cfg.get("pack_to_max_length"):
        from xtune.data.packing import pack_rows

        seed = cfg.get("seed", 0) if cfg.get("shuffle_before_pack", True) else None
        rows = pack_rows([columns["input_ids"][i] for i in kept], [columns["labels"][i] for i in kept],
                         max_length, seed=seed)
        result = datasets.Dataset.from_dict(rows)
        report["fill_ratio"] = sum(map(len, rows["input_ids"])) / (len(rows["input_ids"]) * max_length)
    else:
        result = datasets.Dataset.from_dict({"input_ids": [columns["input_ids"][i] for i in kept],
                                             "labels": [columns["labels"][i] for i in kept]})
    report["rows"] = len(result)
    result.info.description = REPORT_PREFIX + json.dumps(report)
    if use_cache:
        cache.save(result, cache_dir, key, progress=progress and len(result) >= 2000)
    return result


def build_report(dataset) -> dict[str, Any]:
    """The report build_train_dataset attached to `dataset` ({} for a data set built elsewhere)."""
    text = getattr(dataset.info, "description", "") or ""
    return json.loads(text[len(REPORT_PREFIX):]) if text.startswith(REPORT_PREFIX) else {}
