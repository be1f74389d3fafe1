"""`xtune train`: recipe -> checks -> tokenizer, data, model, method -> mmengine runner -> checkpoints.

Read top to bottom, this is the whole training recipe: every step is a call into a module named for
what it does. mmengine's Runner trains without DeepSpeed; its FlexibleRunner with DeepSpeedStrategy
trains with it. Counting is in optimizer steps for the user and in micro-batches for mmengine
(`xtune.engine.schedule`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from xtune.errors import ConfigError

log = logging.getLogger("xtune")


def _console_logging() -> None:
    """Show xtune's own INFO lines (parameter counts, the bitsandbytes fix) beside mmengine's log."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s - xtune - %(levelname)s - %(message)s", "%m/%d %H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def default_work_dir(recipe_path: Path) -> str:
    return str(Path("work_dirs") / recipe_path.stem)


def _build_dataset(cfg, tokenizer, registry, seed: int):
    """The data pipeline's rows; rank 0 builds (and caches) first so other ranks read its cache."""
    from mmengine.dist import barrier, get_rank, is_distributed

    from xtune.data.pipeline import build_train_dataset

    data_cfg = dict(cfg.train_dataset)
    data_cfg.setdefault("seed", seed)
    if is_distributed() and get_rank() != 0:
        barrier()
    dataset = build_train_dataset(data_cfg, tokenizer, registry=registry)
    if is_distributed() and get_rank() == 0:
        barrier()
    return dataset


def _sampler(dataset, cfg, seed: int):
    """Shuffled rows for packed data; length-grouped batches (little padding) for unpacked data."""
    from mmengine.dataset import DefaultSampler

    if cfg.train_dataset.get("pack_to_max_length") or cfg.train_dataloader.get("group_by_length") is False:
        return DefaultSampler(dataset, shuffle=True, seed=seed)
    from xtune.data.collate import LengthGroupedSampler

    lengths = [len(ids) for ids in dataset["input_ids"]]
    return LengthGroupedSampler(lengths, int(cfg.train_dataloader.batch_size), seed=seed)


def _dataloader(dataset, cfg, tokenizer, sampler) -> dict:
    from xtune.data.collate import build_collator

    return dict(dataset=dataset, sampler=sampler, collate_fn=build_collator(dict(cfg.train_dataset), tokenizer),
                batch_size=int(cfg.train_dataloader.batch_size),
                num_workers=int(cfg.train_dataloader.get("num_workers", 0) or 0))


def export_hf_after_training(cfg, runner, tokenizer, work_dir: str) -> None:
    """The call point for `export_hf = True`: write WORK_DIR/hf with the exporter from `xtune.export`
    (issue 6). Skipped, with a log line, while that package has no exporter."""
    if not cfg.get("export_hf"):
        return
    import xtune.export as export

    exporter = getattr(export, "export_after_training", None)
    if exporter is None:
        runner.logger.info("export_hf: skipped (xtune.export has no exporter in this version); "
                           "the checkpoints are in the work dir")
        return
    exporter(cfg=cfg, runner=runner, tokenizer=tokenizer, out_dir=os.path.join(work_dir, "hf"))


def train(recipe_path, args) -> int:
    """Run `xtune train` for parsed CLI `args` (recipe, work_dir, deepspeed, resume, seed, cfg_options, launcher)."""
    from xtune.engine.config import load_recipe
    from xtune.plugins import get_registry

    recipe_path = Path(recipe_path)
    extra = {"seed": args.seed} if getattr(args, "seed", None) is not None else {}
    cfg = load_recipe(recipe_path, getattr(args, "cfg_options", None) or [], extra)
    work_dir = getattr(args, "work_dir", None) or default_work_dir(recipe_path)
    registry = get_registry()
    from xtune.engine.checks import preflight

    deepspeed = getattr(args, "deepspeed", None)
    preflight(cfg, registry, work_dir=work_dir, deepspeed=deepspeed)
    return _train_checked(cfg, registry, recipe_path, work_dir, args)


def _train_checked(cfg, registry, recipe_path: Path, work_dir: str, args) -> int:
    import warnings

    import torch
    from mmengine.runner import set_random_seed

    from xtune.engine import compat
    from xtune.engine.checkpoints import find_resume_checkpoint
    from xtune.engine.launch import resolve_launcher
    from xtune.engine.schedule import plan_schedule, resolve_precision
    from xtune.methods.common import apply_method, method_settings
    from xtune.models.loading import count_parameters, load_model, load_tokenizer

    # The LR schedule advances per micro-batch while the optimizer steps once per accumulation group (as in
    # XTuner); torch's ordering warning on the first micro-batch is expected, not a bug.
    warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler.step\(\)` before")
    warnings.filterwarnings("ignore", message=r"Detected call of `scheduler.step\(\)` before")
    _console_logging()
    deepspeed = getattr(args, "deepspeed", None)
    launcher = resolve_launcher(getattr(args, "launcher", "none") or "none")
    if launcher != "none" or deepspeed:
        compat.init_distributed_without_cuda(use_deepspeed=bool(deepspeed))
        launcher = "pytorch"
    world_size = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    compat.allow_mmengine_checkpoints()
    seed = int(cfg.randomness.get("seed", 0) if cfg.get("randomness") else 0)
    set_random_seed(seed, deterministic=bool(cfg.get("randomness", {}).get("deterministic", False)))
    resume_from = find_resume_checkpoint(getattr(args, "resume", None), work_dir)

    adapter_name = cfg.model.get("adapter")
    adapter = registry.model_adapters.get(adapter_name) if adapter_name else None
    source = cfg.get("model_source", "auto")
    tokenizer = load_tokenizer(cfg.tokenizer, adapter, source)
    dataset = _build_dataset(cfg, tokenizer, registry, seed)
    val_dataset = None
    if float(cfg.get("val_ratio") or 0) > 0:
        split = dataset.train_test_split(test_size=float(cfg.val_ratio), seed=seed)
        dataset, val_dataset = split["train"], split["test"]
    if len(dataset) == 0:
        raise ConfigError("the training data set is empty after processing")
    schedule = plan_schedule(cfg, len(dataset), world_size)
    precision = resolve_precision(cfg.optim_wrapper.get("dtype", "auto"))

    ds_config = None
    if deepspeed:
        from xtune.engine.deepspeed_config import fill_auto, load_deepspeed_config

        clip = cfg.optim_wrapper.get("clip_grad") or {}
        ds_config = fill_auto(load_deepspeed_config(deepspeed, registry),
                              micro_batch=int(cfg.train_dataloader.batch_size), accumulation=schedule.accumulation,
                              max_norm=clip.get("max_norm"), precision=precision, world_size=world_size)
        if ds_config.get("zero_optimization", {}).get("stage") == 3:
            from transformers.integrations import HfDeepSpeedConfig

            _keep_alive = HfDeepSpeedConfig(ds_config)  # noqa: F841 - from_pretrained partitions at load (zero.Init)

    method, _ = method_settings(cfg.method_cfg, registry)
    llm = load_model(cfg.model, adapter=adapter, load_in_bits=method.load_in_bits, source=source)
    llm = apply_method(llm, cfg.method_cfg, registry, adapter)
    trainable, total = count_parameters(llm)

    from xtune.engine.runner_setup import build_runner

    runner = build_runner(cfg, name=recipe_path.stem, llm=llm, tokenizer=tokenizer, dataset=dataset, val_dataset=val_dataset,
                          schedule=schedule, work_dir=work_dir, launcher=launcher, ds_config=ds_config,
                          resume_from=resume_from, seed=seed, params=(trainable, total), world_size=world_size,
                          sampler=_sampler(dataset, cfg, seed),
                          dataloader=lambda ds, sampler: _dataloader(ds, cfg, tokenizer, sampler))
    cfg.dump(str(Path(work_dir) / recipe_path.name))
    runner.logger.info(f"recipe {recipe_path.stem}: {schedule.max_steps} optimizer steps of "
                       f"{schedule.accumulation} x {cfg.train_dataloader.batch_size} rows x {world_size} processes "
                       f"({schedule.max_iters} micro-batches); precision {precision}; "
                       f"trainable params {trainable:,} / {total:,}")
    import signal
    import threading

    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        runner.train()
    finally:  # a failed run must not leave xtune's SIGTERM handler in a host process (tests, notebooks)
        if sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, sigterm)
    export_hf_after_training(cfg, runner, tokenizer, work_dir)
    return 0
