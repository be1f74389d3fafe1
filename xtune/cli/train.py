"""`xtune train NAME_OR_PATH`: check the recipe and everything it names, train (`xtune.engine`), then write
WORK_DIR/hf with the exporter (`xtune.export`) when the recipe says `export_hf = True`."""

from __future__ import annotations

import os


def add_parser(subparsers, common):
    p = subparsers.add_parser("train", parents=[common], help="train a recipe",
                              description="Train a recipe (a name from `xtune list-cfg` or a .py path).")
    p.add_argument("recipe", metavar="NAME_OR_PATH")
    p.add_argument("--work-dir", help="output folder (default work_dirs/<recipe>)")
    p.add_argument("--deepspeed", help="zero1|zero2|zero2_offload|zero3|zero3_offload or a JSON file")
    p.add_argument("--resume", help="'auto' for the latest checkpoint in the work dir, or a checkpoint path")
    p.add_argument("--overwrite", action="store_true",
                   help="clear a previous run's checkpoints, hf/ and logs in the work dir before training")
    p.add_argument("--seed", type=int, help="random seed (overrides the recipe's seed)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="--resume from a pickled checkpoint without restrictions (it can run code: only for "
                        "checkpoints from someone you trust)")
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override recipe settings")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none",
                   help="several processes: torchrun sets 'pytorch'; or set NPROC_PER_NODE=N (NNODES, "
                        "NODE_RANK, ADDR, PORT, sequence_parallel_size=N in --cfg-options) and xtune "
                        "starts the processes itself")
    p.add_argument("--local_rank", "--local-rank", type=int, default=0, help=argparse_hidden())
    p.set_defaults(func=run)


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


def run(args) -> int:
    from xtune.plugins import get_registry
    from xtune.recipe_files import resolve_recipe

    registry = get_registry()
    path = resolve_recipe(args.recipe, registry)
    from xtune.engine.console import quiet_libraries
    from xtune.engine.launch import relaunch_if_requested
    from xtune.engine.train import TrainRequest, check_before_launch, train

    request = TrainRequest(recipe=path, options=tuple(args.cfg_options or ()), work_dir=args.work_dir,
                           deepspeed=args.deepspeed, resume=args.resume, overwrite=bool(args.overwrite),
                           seed=args.seed, launcher=getattr(args, "launcher", "none") or "none",
                           debug=bool(getattr(args, "debug", False)) or os.environ.get("XTUNE_DEBUG") == "1")

    def check(world_size: int) -> None:  # once, before NPROC_PER_NODE processes start
        with quiet_libraries(request.debug):
            check_before_launch(request, registry, world_size)

    from xtune.checkpoint.trust import trusting

    with trusting(bool(getattr(args, "trust_checkpoint", False))):
        code = relaunch_if_requested(_argv(args), check=check, debug=request.debug)
        if code is not None:
            return code
        with quiet_libraries(request.debug):
            done = train(request, registry)
            if done.cfg.get("export_hf"):
                from xtune.export.pth_to_hf import export_after_training

                export_after_training(done, out_dir=os.path.join(done.work_dir, "hf"), registry=registry)
    return 0


def _argv(args) -> list[str]:
    """The train command line again, for re-running it under torchrun."""
    argv = [args.recipe]
    for flag, value in (("--work-dir", args.work_dir), ("--deepspeed", args.deepspeed),
                        ("--resume", args.resume),
                        ("--seed", args.seed)):
        if value is not None:
            argv += [flag, str(value)]
    for flag in ("overwrite", "trust_checkpoint"):
        if getattr(args, flag, False):
            argv.append("--" + flag.replace("_", "-"))
    if args.cfg_options:
        argv += ["--cfg-options", *args.cfg_options]
    if getattr(args, "debug", False):
        argv.append("--debug")
    return argv
