"""`xtune check-custom-dataset`: validate every record of a data set, then summarise it.

Two forms: a recipe (name or .py, XTuner's form), which is checked with its own map, template,
tokenizer and max_length; or `--data FILE --format FORMAT [--template NAME] [--tokenizer PATH]`
for a file on its own. Every bad record is reported (file, line, field) before anything is
summarised, and the command exits 2 when any record is bad.
"""

from __future__ import annotations

import json


def add_parser(subparsers, common):
    p = subparsers.add_parser(
        "check-custom-dataset",
        parents=[common],
        help="validate a data set and summarise it",
        description="Validate every record of a recipe's data set (or of --data FILE in --format FORMAT), "
        "then print records, tokens, trained tokens, truncated / dropped samples and a length "
        "histogram.",
    )
    p.add_argument("recipe", nargs="?", metavar="RECIPE_OR_PATH", help="recipe name or .py file")
    p.add_argument("--data", metavar="FILE", help="a data file or folder to check instead of a recipe's")
    p.add_argument("--format", metavar="FORMAT", help="record format / dataset map of --data (e.g. alpaca)")
    p.add_argument("--template", metavar="NAME", help="chat template to render with (--data form)")
    p.add_argument("--tokenizer", metavar="PATH", help="tokenizer folder for token counts (--data form)")
    p.add_argument("--max-length", type=int, default=2048, help="truncation length (--data form)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override recipe settings")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from xtune.errors import UsageError

    if bool(args.recipe) == bool(args.data):
        raise UsageError("give either RECIPE_OR_PATH or --data FILE --format FORMAT",
                         hint="e.g. xtune check-custom-dataset --data my.jsonl --format alpaca")
    if args.data:
        if not args.format:
            raise UsageError("--data needs --format", hint="e.g. --format alpaca (see `xtune plugins`)")
        summary = _check_file(args)
    else:
        summary = _check_recipe(args)
    _print(summary, args.json)
    return 0


def _check_recipe(args) -> dict:
    from xtune.cli.recipe_data import recipe_dataset
    from xtune.data.inspect import dataset_stats

    cfg, _, dataset = recipe_dataset(args.recipe, args.cfg_options)
    return {"source": cfg.get("data_path") or cfg.get("dataset_map"), "format": cfg.get("dataset_map"),
            "template": cfg.get("prompt_template"), **dataset_stats(dataset)}


def _check_file(args) -> dict:
    from xtune.data.pipeline import load_conversations, render_conversations
    from xtune.data.records import map_data

    cfg = {"dataset_map": args.format, "data_path": args.data, "prompt_template": args.template,
           "max_length": args.max_length, "pack_to_max_length": False}
    registry = _registry()
    kind = map_data(args.format, registry) if args.format in registry.dataset_maps else "sft"
    if kind != "sft":
        from xtune.data.preference import load_items, sequences

        cfg["rows"] = kind  # pairs (or KTO items): each rendered as its two sequences; prompts as one
        items, wheres, _ = load_items(cfg, registry=registry)
        records, conversations = len(items), sequences(items, kind)
        wheres = [w for w in wheres for _ in range(1 if kind == "prompts" else 2)]
    else:  # no model here: image records are fine, pictures a text format would drop are not
        conversations, wheres, _ = load_conversations(cfg, registry=registry, vision=not args.tokenizer)
        records = len(conversations)
    summary = {"source": args.data, "format": args.format, "template": args.template}
    if args.tokenizer:
        from transformers import AutoTokenizer

        from xtune.data.inspect import dataset_stats
        from xtune.data.pipeline import build_train_dataset
        from xtune.errors import UsageError

        if not args.template and any(c[0]["role"] != "text" for c in conversations):
            raise UsageError("--tokenizer needs --template for chat data (token counts depend on it)")
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        return {**summary, **dataset_stats(build_train_dataset(cfg, tokenizer, registry=registry,
                                                               use_cache=False))}
    if args.template:
        segments = render_conversations(conversations, wheres, args.template, registry=registry)
        chars = [sum(len(s["text"]) for s in segs) for segs in segments]
        trained = [sum(len(s["text"]) for s in segs if s["train"]) for segs in segments]
    else:
        chars = [sum(len(m["content"]) for m in conv) for conv in conversations]
        trained = [sum(len(m["content"]) for m in conv if m["loss"]) for conv in conversations]
    from xtune.data.inspect import length_histogram

    return {**summary, "records": records, "messages": sum(map(len, conversations)),
            "characters": sum(chars), "trained_characters": sum(trained),
            "length_histogram_chars": length_histogram(chars),
            "note": "pass --tokenizer PATH (and --template) for token counts, truncation and drops"}


def _registry():
    from xtune.plugins import get_registry

    return get_registry()


def _print(summary: dict, as_json: bool) -> None:
    from xtune.data.inspect import format_stats

    if as_json:
        print(json.dumps(summary, ensure_ascii=False, indent=1))
        return
    print(f"OK: every record of {summary['source']} is valid ({summary['format']}"
          + (f", template {summary['template']}" if summary.get("template") else "") + ")")
    if "tokens" in summary:
        print(format_stats(summary))
        return
    print(f"records:            {summary['records']}")
    print(f"messages:           {summary['messages']}")
    print(f"characters:         {summary['characters']} (trained {summary['trained_characters']})")
    print("length histogram (characters per sample):")
    peak = max((c for *_, c in summary["length_histogram_chars"]), default=0) or 1
    for low, high, count in summary["length_histogram_chars"]:
        print(f"  {low:>7}-{high:<7} {count:>7}  {'#' * round(40 * count / peak)}")
    print(summary["note"])
