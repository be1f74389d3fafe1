"""`xtune estimate RECIPE`: the memory a training run needs, per device, before anything is downloaded.

Reads the recipe and the model's architecture only (registry figures, or a local / cached config.json);
no weights, no torch. The memory model and its measured accuracy: docs/estimate.md.
"""

from __future__ import annotations


def add_parser(subparsers, common):
    p = subparsers.add_parser("estimate", parents=[common],
                              help="memory a recipe's training needs, per device",
                              description="Estimate the memory of `xtune train RECIPE` per device: weights, "
                                          "gradients, optimizer states, activations, DeepSpeed partitioning.")
    p.add_argument("recipe", metavar="RECIPE_OR_PATH", help="a recipe name or file")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="the overrides the training run would get (max_length=4096 batch_size=2 ...)")
    p.add_argument("--deepspeed", metavar="PRESET_OR_JSON", help="zero1, zero2, zero2_offload, zero3, "
                                                                 "zero3_offload, or a DeepSpeed JSON file")
    p.add_argument("--gpus", type=int, default=1, metavar="N",
                   help="devices the run is spread over (default 1)")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="what the run trains on (default cuda)")
    p.add_argument("--labelled-share", type=float, default=1.0, metavar="F",
                   help="share of tokens that carry a label (default 1: the upper bound; logits are "
                        "computed only there, so chat data with short answers needs less)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON (bytes)")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from xtune.errors import ConfigError, UsageError
    from xtune.estimate import estimate_recipe_cfg
    from xtune.estimate.report import as_json, table
    from xtune.plugins import get_registry
    from xtune.recipe import load_recipe
    from xtune.recipe_files import resolve_recipe

    if args.gpus < 1:
        raise UsageError(f"--gpus {args.gpus}: needs at least one device")
    if not 0 < args.labelled_share <= 1:
        raise UsageError(f"--labelled-share {args.labelled_share}: must be in (0, 1]")
    from xtune.plan import resolve_plan

    registry = get_registry()
    path = resolve_recipe(args.recipe, registry)
    cfg = load_recipe(path, args.cfg_options)
    run_plan = resolve_plan(cfg, registry, recipe=path.stem, deepspeed=args.deepspeed)
    from xtune.engine.objective_setup import run_problems

    if problems := run_problems(cfg, registry, deepspeed=args.deepspeed, processes=args.gpus):
        raise ConfigError("; ".join(problems))  # what `xtune train` refuses has no figures
    est = estimate_recipe_cfg(cfg, registry, run_plan, device=args.device, num_devices=args.gpus,
                              labelled_share=args.labelled_share)
    if args.json:
        print(json.dumps({**as_json(est, path.stem), "run_plan": run_plan.to_dict()}, indent=1))
    else:
        print(table(est, path.stem))
    return 0
