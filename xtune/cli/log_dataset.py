"""`xtune log-dataset RECIPE`: the first training samples as the model sees them.

Each sample is decoded from its token ids with the trained spans marked ``[[...]]``, followed by
its token counts, so a wrong template or label mask is visible before any training runs.
"""

from __future__ import annotations


def add_parser(subparsers, common):
    p = subparsers.add_parser("log-dataset", parents=[common], help="show processed training samples",
                              description="Print the first samples of a recipe's training data, decoded, "
                                          "with trained spans marked [[...]], and token counts.")
    p.add_argument("recipe", metavar="RECIPE", help="recipe name or .py file")
    p.add_argument("-n", "--num", type=int, default=3, help="how many samples to show (default 3)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override recipe settings")
    p.set_defaults(func=run)


def run(args) -> int:
    from xtune.cli.recipe_data import recipe_dataset
    from xtune.data.encode import build_report
    from xtune.data.inspect import TRAIN_MARKS, dataset_stats, format_stats, render_sample
    from xtune.data.packing import sample_lengths
    from xtune.data.tokenize import IGNORE_INDEX

    cfg, tokenizer, dataset = recipe_dataset(args.recipe, args.cfg_options)
    roles = build_report(dataset).get("sample_roles") or []  # preference rows: chosen, rejected, ...
    print(
        f"Trained text is marked {TRAIN_MARKS[0]}...{TRAIN_MARKS[1]}; template {cfg.get('prompt_template')}, "
        f"max_length {cfg.get('max_length')}, packed {bool(cfg.get('pack_to_max_length'))}."
    )
    shown = 0
    for row in dataset:
        lengths = sample_lengths(row["position_ids"]) if "position_ids" in row else [len(row["input_ids"])]
        start = 0
        for text, length in zip(render_sample(row, tokenizer), lengths, strict=True):
            labels = row["labels"][start : start + length]
            start += length
            trained = sum(1 for label in labels if label != IGNORE_INDEX)
            role = f" ({roles[shown % len(roles)]})" if len(roles) > 1 else ""
            print(f"\n----- sample {shown}{role}: {length} tokens, {trained} trained -----")
            print(text)
            shown += 1
            if shown >= args.num:
                break
        if shown >= args.num:
            break
    print("\n----- summary -----")
    print(format_stats(dataset_stats(dataset)))
    return 0
