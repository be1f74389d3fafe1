"""`xtune train`: recipe -> checks -> tokenizer, data, model, method -> mmengine runner -> checkpoints.

Read top to bottom, this is the whole training recipe: every step is a call into a module named for
what it does. mmengine's Runner trains without DeepSpeed; its FlexibleRunner with DeepSpeedStrategy
trains with it. Counting is in optimizer steps for the user and in micro-batches for mmengine
(`xtune.schedule`). Writing WORK_DIR/hf afterwards is the CLI's step (`xtune.cli.train`), so the engine
never depends on the exporters.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xtune.errors import ConfigError

log = logging.getLogger("xtune")


@dataclass
class TrainedRun:
    """What a finished run leaves in memory for the steps after it (the WORK_DIR/hf export)."""

    cfg: Any
    runner: Any
    tokenizer: Any  # a vision-language model's processor
    schedule: Any
    method: Any  # the TuningMethod entry
    recipe: str
    work_dir: str


def recipe_record(cfg, recipe_path: Path, options: list[str], trained) -> dict:
    """What every checkpoint stores about its recipe: the text after the top-level overrides, the dotted
    overrides applied on top, and the settings that define the trained tensors (checked by pth_to_hf)."""
    dotted = [o for o in options if "." in o.partition("=")[0]]
    from xtune.recipe import recipe_source

    return {"name": recipe_path.stem, "text": recipe_source(cfg), "dotted_options": dotted,
            "method": {"type": trained.method.name, **trained.settings},
            "model_adapter": trained.adapter.name if trained.adapter is not None else None,
            "pretrained_model_name_or_path": str(cfg.model.get("pretrained_model_name_or_path", ""))}


def quiet_libraries(debug: bool) -> None:
    """Library noise (deprecation FutureWarnings, weight-loading progress bars, bitsandbytes' note about
    a missing optional kernel package) only with --debug: users read xtune's lines."""
    if debug:
        return
    import warnings

    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # else DeepSpeed warns at import that it guessed

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=r".*use_reentrant.*")
    for name in ("bitsandbytes", "transformers.modeling_utils", "datasets"):
        logging.getLogger(name).setLevel(logging.ERROR)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _debug(args) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("XTUNE_DEBUG") == "1"


def _console_logging() -> None:
    """Show xtune's own INFO lines (precision, parameter counts, the bitsandbytes fix) beside mmengine's."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(
            logging.Formatter("%(asctime)s - xtune - %(levelname)s - %(message)s", "%m/%d %H:%M:%S"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def default_work_dir(recipe_path: Path) -> str:
    return str(Path("work_dirs") / recipe_path.stem)


def _build_dataset(cfg, data_cfg: dict, tokenizer, registry, processor=None):
    """The data pipeline's rows; rank 0 builds (and caches) first so other ranks read its cache."""
    from mmengine.dist import barrier, get_rank, is_distributed

    from xtune.data.from_recipe import build_dataset
    from xtune.models.build import model_adapter

    adapter = model_adapter(cfg, registry)
    if processor is not None and data_cfg.get("pack_to_max_length") and not adapter.supports_varlen:
        raise ConfigError(f"pack_to_max_length=True: {adapter.name} models place tokens by their own "
                          "(multimodal) positions, which packed rows would break",
                          hint="set pack_to_max_length=False (batches are grouped by length)")
    if is_distributed() and get_rank() != 0:
        barrier()
    dataset = build_dataset(data_cfg, tokenizer, registry=registry, processor=processor,
                            image_prompt=adapter.image_prompt if adapter is not None else "")
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


def _dataloader(dataset, cfg, data_cfg: dict, tokenizer, sampler, processor=None) -> dict:
    from xtune.data.image_batches import build_image_collator
    from xtune.data.preference_collate import collator_for

    collate = (build_image_collator(dict(cfg.train_dataset), processor) if processor is not None
               else collator_for(data_cfg, tokenizer))
    return dict(dataset=dataset, sampler=sampler, collate_fn=collate,
                batch_size=int(cfg.train_dataloader.batch_size),
                num_workers=int(cfg.train_dataloader.get("num_workers", 0) or 0))


def train(recipe_path, args, registry) -> TrainedRun:
    """Run `xtune train` for parsed CLI `args` (recipe, work_dir, deepspeed, resume, seed, cfg_options,
    launcher, overwrite): check everything, then train while holding the work dir's lock."""
    from xtune.engine.checks import preflight
    from xtune.engine.workdir import check_previous_run, locked, removed_if_untrained
    from xtune.recipe import load_recipe

    quiet_libraries(_debug(args))
    recipe_path = Path(recipe_path)
    extra = {"seed": args.seed} if getattr(args, "seed", None) is not None else {}
    cfg = load_recipe(recipe_path, getattr(args, "cfg_options", None) or [], extra)
    work_dir = getattr(args, "work_dir", None) or default_work_dir(recipe_path)
    preflight(cfg, registry, work_dir=work_dir, deepspeed=getattr(args, "deepspeed", None),
              resume=getattr(args, "resume", None))
    with removed_if_untrained(Path(work_dir)) as state, locked(Path(work_dir)):
        check_previous_run(Path(work_dir), resume=getattr(args, "resume", None),
                           overwrite=bool(getattr(args, "overwrite", False)))
        return _train_checked(cfg, registry, recipe_path, work_dir, args, state)


def _distributed(args) -> tuple[str, int]:
    """(mmengine launcher, world size), with the process group made without CUDA where needed."""
    import torch

    from xtune import compat
    from xtune.engine.launch import resolve_launcher

    deepspeed = getattr(args, "deepspeed", None)
    launcher = resolve_launcher(getattr(args, "launcher", "none") or "none")
    if launcher != "none" or deepspeed:
        compat.init_distributed_without_cuda(use_deepspeed=bool(deepspeed))
        launcher = "pytorch"
    world_size = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return launcher, world_size


def _precision(cfg):
    """The run's precision for this machine, said once in the log (with a warning when it will be slow)."""
    from xtune.hardware import choose_precision, on_cuda, set_cpu_threads

    precision = choose_precision(cfg.optim_wrapper.get("dtype", "auto"))
    log.info(str(precision) + ("" if on_cuda() else f"; {set_cpu_threads()}"))
    if precision.warning:
        log.warning(precision.warning)
    return precision


def _deepspeed_config(args, cfg, registry, schedule, precision, world_size: int):
    deepspeed = getattr(args, "deepspeed", None)
    if not deepspeed:
        return None, None
    from xtune.engine.deepspeed_config import fill_auto, load_deepspeed_config

    clip = cfg.optim_wrapper.get("clip_grad") or {}
    ds_config = fill_auto(load_deepspeed_config(deepspeed, registry),
                          micro_batch=int(cfg.train_dataloader.batch_size),
                          accumulation=schedule.accumulation, max_norm=clip.get("max_norm"),
                          precision=precision.name, world_size=world_size)
    keep_alive = None
    if ds_config.get("zero_optimization", {}).get("stage") == 3:
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(
            ds_config)  # from_pretrained partitions at load (zero.Init) while it lives
    return ds_config, keep_alive


def _data(cfg, data_cfg: dict, registry, tokenizer, processor=None):
    dataset = _build_dataset(cfg, data_cfg, tokenizer, registry, processor)
    val_dataset = None
    if float(cfg.get("val_ratio") or 0) > 0:
        split = dataset.train_test_split(test_size=float(cfg.val_ratio), seed=data_cfg["seed"])
        dataset, val_dataset = split["train"], split["test"]
    if len(dataset) == 0:
        raise ConfigError("the training data set is empty after processing")
    return dataset, val_dataset


def _train_checked(cfg, registry, recipe_path: Path, work_dir: str, args, state) -> TrainedRun:
    from mmengine.runner import set_random_seed

    from xtune import compat
    from xtune.checkpoint.layout import find_resume_checkpoint
    from xtune.data.from_recipe import dataset_cfg
    from xtune.data.preference_collate import collator_for
    from xtune.engine.objective_setup import prepare_objective
    from xtune.engine.runner_setup import RunParts, build_runner
    from xtune.fileio import atomic_write_text
    from xtune.methods.common import count_parameters
    from xtune.models.build import build_trainable, recipe_processor, recipe_tokenizer
    from xtune.objectives.build import build_objective
    from xtune.schedule import plan_schedule

    _console_logging()
    debug = _debug(args)
    launcher, world_size = _distributed(args)
    compat.allow_mmengine_checkpoints()
    seed = int(cfg.randomness.get("seed", 0) if cfg.get("randomness") else 0)
    set_random_seed(seed, deterministic=bool(cfg.get("randomness", {}).get("deterministic", False)))
    resume_from = find_resume_checkpoint(getattr(args, "resume", None), work_dir)
    precision = _precision(cfg)
    processor = recipe_processor(cfg, registry)  # None for a text model
    tokenizer = processor.tokenizer if processor is not None else recipe_tokenizer(cfg, registry)
    data_cfg = dataset_cfg(cfg, registry)
    data_cfg.setdefault("seed", seed)
    dataset, val_dataset = _data(cfg, data_cfg, registry, tokenizer, processor)
    schedule = plan_schedule(cfg, len(dataset), world_size)
    ds_config, _keep_alive = _deepspeed_config(args, cfg, registry, schedule, precision, world_size)
    trained = build_trainable(cfg, registry, precision=precision.name)
    objective = prepare_objective(build_objective(cfg, registry), trained.model, dataset,
                                  collator=collator_for(data_cfg, tokenizer),
                                  batch_size=int(cfg.train_dataloader.batch_size), tokenizer=tokenizer,
                                  cfg=cfg, registry=registry, precision=precision.name, world_size=world_size)
    dataset = objective.dataset
    if resume_from:
        _check_resume_fits(trained.model, resume_from)
    params = count_parameters(trained.model)
    parts = RunParts(name=recipe_path.stem, llm=trained.model, tokenizer=tokenizer, dataset=dataset,
                     val_dataset=val_dataset, schedule=schedule, precision=precision, work_dir=work_dir,
                     launcher=launcher, ds_config=ds_config, resume_from=resume_from, seed=seed,
                     params=params, world_size=world_size, sampler=_sampler(dataset, cfg, seed),
                     dataloader=lambda ds, sampler: _dataloader(ds, cfg, data_cfg, tokenizer, sampler,
                                                                processor),
                     registry=registry, quiet=not debug, objective=objective,
                     recipe=recipe_record(cfg, recipe_path, args.cfg_options or [], trained))
    runner = build_runner(cfg, parts)
    atomic_write_text(Path(work_dir) / recipe_path.name, cfg.pretty_text)  # the resolved recipe
    runner.logger.info(f"recipe {recipe_path.stem}: {schedule.max_steps} optimizer steps of "
                       f"{schedule.accumulation} x {cfg.train_dataloader.batch_size} rows x {world_size} "
                       f"processes ({schedule.max_iters} micro-batches); {precision.name}; "
                       f"trainable params {params[0]:,} / {params[1]:,}")
    if objective.summary and objective.summary != "objective sft":
        runner.logger.info(objective.summary)
    state.started = True
    _run_restoring_sigterm(runner)
    return TrainedRun(cfg=cfg, runner=runner, tokenizer=processor if processor is not None else tokenizer,
                      schedule=schedule, method=trained.method, recipe=recipe_path.stem, work_dir=work_dir)


def _check_resume_fits(model, checkpoint: str) -> None:
    """A checkpoint of another model or of other method settings is refused in one line, before mmengine
    would print dozens of size mismatches and then fail in the optimizer."""
    if Path(checkpoint).is_dir():
        return  # DeepSpeed shards: DeepSpeed checks them itself
    from xtune.checkpoint.read import check_fits, read_checkpoint, without_heads

    weights = read_checkpoint(checkpoint)
    check_fits(model, without_heads(weights.state_dict), source=checkpoint, what="this run's model",
               hint="resume with the recipe and --cfg-options the checkpoint was trained with, or train "
                    "without --resume")


def _run_restoring_sigterm(runner) -> None:
    """runner.train(); a failed run must not leave xtune's SIGTERM handler in a host process (tests,
    notebooks)."""
    import signal
    import threading

    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        runner.train()
    finally:
        if sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, sigterm)
