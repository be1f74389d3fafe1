"""Records -> checked conversations: the first half of the data pipeline (`xtune.data.pipeline`).

A dataset map names a converter (or reuses another map's, with renamed columns) and a default source;
every record of the source is converted and checked here, so bad data is reported all together with
file, line and field before any tokenizing starts.
"""

from __future__ import annotations

from importlib import resources

from xtune.data.conversation import RecordError, apply_settings, validate
from xtune.data.images import unread_pictures, without_pictures
from xtune.data.sources import Source, collect, load_source
from xtune.errors import ConfigError, DataError
from xtune.templates.images import IMAGE_MARKER

SELF_COGNITION_ASSET = "self_cognition.json"


def resolve_map(name: str, *, registry):
    """(converter, options, entry) for a dataset map of `registry`; `format=` maps reuse their base's
    converter."""
    from xtune.registry import import_object

    table = registry.dataset_maps
    if name not in table:
        raise DataError(
            f"unknown data format / dataset map {name!r} (valid: {', '.join(sorted(table.names()))})")
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
    if entry.hub_id:
        return entry.hub_id
    raise ConfigError(f"dataset map {entry.name!r} has no default source", hint="set data_path in the recipe")


def accepted_options(convert) -> list[str]:
    """The fields (and settings such as sharegpt's tags) a converter reads, from its signature."""
    import inspect

    from xtune.data.formats import SHAREGPT_TAGS

    params = inspect.signature(convert).parameters
    names = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    takes_tags = getattr(convert, "tags", convert.__name__ == "sharegpt")  # sharegpt's role tags as options
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()) and takes_tags:
        names += list(SHAREGPT_TAGS)
    return names


def converter_options(cfg: dict, base_options: dict, convert=None) -> dict:
    """The map's column names, overridden by the recipe's custom `columns` mapping and self-cognition names.

    A `columns` key the converter does not read is an error (a typo would otherwise be ignored).
    """
    options = dict(base_options)
    columns = cfg.get("columns") or {}
    if not isinstance(columns, dict):
        raise ConfigError(
            f"train_dataset.columns must be a dict of field -> column, got {type(columns).__name__}")
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


def load_conversations(cfg: dict, *, registry, progress: bool = True, skipped: list[str] | None = None,
                       deferred: list[str] | None = None,
                       vision: bool = False) -> tuple[list, list[str], str]:
    """Every record of the configured source as a checked conversation: (conversations, wheres, fingerprint).

    Raises one DataError listing every bad record (file, line, field). With the recipe switch
    `skip_bad_records=True` bad records are left out instead, each one logged as a warning and
    appended to `skipped`, so the build report counts them. With `deferred`, the problems are appended
    there for the caller to settle (`settle_problems`) together with its own. `vision`: the records go to
    a vision-language model, so their pictures are kept (see `refuse_pictures`).
    """
    return load_records(cfg, checked_conversation, registry=registry, progress=progress, skipped=skipped,
                        deferred=deferred, vision=vision)


def checked_conversation(messages, *, system: str, train_on: str, map_name: str):
    """A converter's conversation with the recipe's system prompt and train_on applied, checked."""
    if messages and messages[0]["role"] != "text":
        messages = validate(apply_settings(messages, system=system, train_on=train_on))
    return messages


def load_records(cfg: dict, check, *, registry, progress: bool = True, skipped: list[str] | None = None,
                 deferred: list[str] | None = None, vision: bool = False) -> tuple[list, list[str], str]:
    """Every record converted by its dataset map and passed through `check(converted, system=, train_on=,
    map_name=)` (which raises RecordError): (items, wheres, fingerprint), bad records reported together
    (or, with `deferred`, appended there for the caller to settle with its own)."""
    check_settings(cfg)
    parts = _parts(cfg, registry)
    items, wheres, problems, prints, pictured, total = [], [], [], [], [], 0
    for map_name, data_path in parts:
        convert, options, entry = resolve_map(map_name, registry=registry)
        options = converter_options(cfg, options, convert)
        source: Source = load_source(data_path or default_source(entry), config=entry.hub_config,
                                     split=entry.split, data_files=entry.data_files)
        prints.append(source.fingerprint)
        problems += source.problems
        settings = dict(system=cfg.get("system") or entry.system, train_on=cfg.get("train_on", "all_turns"),
                        map_name=map_name)
        bad, before = [], len(items)
        for where, record in _progress(source, f"Checking {source.name}", progress):
            total += 1
            try:
                converted = convert(record, **options)
                if field := unread_pictures(record, converted, convert, vision=vision):
                    pictured.append((where, field, map_name))
                    converted = without_pictures(converted)
                item = check(converted, **settings)
            except RecordError as exc:
                bad.append((where, exc.describe()))
                continue
            except (TypeError, AttributeError) as exc:  # a record of the wrong shape for this format
                bad.append((where, f"not a {map_name} record ({exc})"))
                continue
            items.append(item)
            wheres.append(where)
        problems += _alike(bad, source.name, len(items) > before or bool(cfg.get("skip_bad_records")))
    refuse_pictures(pictured, total, cfg, vision)
    if deferred is not None:
        deferred += problems  # the caller settles them with its own (e.g. the pictures')
    else:
        settle_problems(problems, cfg, len(items), skipped)
    if not items and not (deferred and problems):
        raise DataError(f"the data set {cfg.get('data_path') or cfg.get('dataset_map')!r} is empty")
    return items, wheres, "|".join(prints)


def refuse_pictures(pictured: list[tuple[str, str, str]], total: int, cfg: dict, vision: bool) -> None:
    """Records whose pictures would be lost (`unread_pictures`): a text model would train on their `<image>`
    text, a text dataset map would drop them. One ConfigError naming the first (file, record, field), or
    with `ignore_images=True` a warning: they train on their text alone, markers left out."""
    if not pictured:
        return
    where, field, map_name = pictured[0]
    count = f"{len(pictured)} of {total} records have images"
    if cfg.get("ignore_images"):
        import logging

        logging.getLogger("xtune.data").warning(
            "Warning: ignore_images=True: the images of %s (field %r, first %s) are left out; they train on "
            "their text alone", count.replace(" have images", ""), field, where)
        return
    if vision:
        raise ConfigError(f"{where}: field {field!r}: dataset map {map_name!r} reads no images, so the model "
                          f"would never see them ({count})",
                          hint="use dataset_map='mllm' (messages + images) or 'llava' (conversations + "
                          "image), or ignore_images=True to train on the text alone")
    raise ConfigError(f"{where}: field {field!r}: the data set shows images, but the model is a text model: "
                      f"the recipe would train on the {IMAGE_MARKER} text and never see them ({count})",
                      hint="use a vision-language (VLM) recipe for this data (`xtune list-cfg -p llava`), or "
                      "--cfg-options ignore_images=True to train on the text alone")


def _alike(bad: list[tuple[str, str]], name: str, keep_each: bool) -> list[str]:
    """The problems of one source's records, each as `where: what`; a source none of whose records
    converted, all for the same reason, is one problem naming its first record (a file of another layout:
    one line, not one per record). Skipped records (`keep_each`) stay one each: they are counted."""
    if keep_each or len(bad) < 2 or len({what for _, what in bad}) > 1:
        return [f"{where}: {what}" for where, what in bad]
    return [f"{bad[0][0]} and all {len(bad) - 1} other records of {name}: {bad[0][1]}"]


def settle_problems(problems: list[str], cfg: dict, kept: int, skipped: list[str] | None = None,
                    hint: str | None = None) -> None:
    """Bad records: one DataError listing them all, or with `skip_bad_records=True` (while some records
    are left) a warning each, counted in `skipped`."""
    if problems and cfg.get("skip_bad_records") and kept:
        import logging

        log = logging.getLogger("xtune.data")
        for problem in problems:
            log.warning("skipped bad record: %s", problem)
        if skipped is not None:
            skipped += problems
    elif problems:
        raise DataError(collect(problems), hint=hint)


def map_data(name: str, registry) -> str:
    """What a dataset map of `registry` yields ('sft', 'pairs', 'unpaired', 'prompts'): a `format=` map
    inherits its base's kind, a mixture its members' (which must agree)."""
    table = registry.dataset_maps
    entry = table.get(name)
    if entry.combine:
        kinds = {map_data(member, registry) for member in entry.combine}
        return kinds.pop() if len(kinds) == 1 else "mixed"
    while entry.format and entry.data == "sft":
        entry = table.get(entry.format)
    return entry.data


def check_settings(cfg: dict) -> None:
    """Recipe data settings of the wrong kind, all reported together."""
    from xtune.data.conversation import TRAIN_ON

    problems = []
    if cfg.get("train_on", "all_turns") not in TRAIN_ON:
        problems.append(
            f"train_dataset.train_on must be one of {', '.join(TRAIN_ON)}, got {cfg['train_on']!r}")
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
    table = registry.dataset_maps
    if name in table and table.get(name).combine:
        if cfg.get("data_path"):
            raise ConfigError(
                f"dataset map {name!r} mixes {', '.join(table.get(name).combine)} from their own "
                              "sources; data_path cannot replace them", hint="pick one format as dataset_map")
        return [(member, None) for member in table.get(name).combine]
    return [(name, cfg.get("data_path"))]


def _progress(items, desc: str, enabled: bool):
    if not enabled or len(items) < 2000:
        return iter(items)
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, total=len(items), unit="rec")


def local_source_print(cfg: dict, *, registry) -> str | None:
    """The source part of the cache key when every source is a local path (as load_conversations
    computes it), else None: hub data sets are only fingerprinted once loaded."""
    from xtune.data.sources import MODELSCOPE_PREFIXES, local_fingerprint, looks_local

    prints = []
    for map_name, data_path in _parts(cfg, registry):
        path = data_path or default_source(resolve_map(map_name, registry=registry)[2])
        if path.startswith(MODELSCOPE_PREFIXES) or not looks_local(path):
            return None
        prints.append(local_fingerprint(path))
    return "|".join(prints)


def dataset_map_entry(cfg: dict, registry) -> dict | None:
    """The dataset map entry a fingerprint covers (its columns, source, system prompt), as a dict."""
    name = cfg.get("dataset_map")
    return registry.dataset_maps.get(name).to_dict() if name in registry.dataset_maps else None
