"""`xtune train`: a request -> the recipe and its run plan, checked -> tokenizer, data, model and method,
objective -> the mmengine runner running xtune's loop (`xtune.engine.loop`) -> checkpoints.

Read top to bottom, `train` and `_prepare` assemble a run; every step is a call into a module named for
what it does, and the run plan (`xtune.plan`) holds the settings the recipe and its overrides resolve to,
the same object `xtune estimate` and `convert pth_to_hf` read. What happens in each optimizer step is the
loop's. The engine never sees the command line: the CLI hands it a `TrainRequest`. Writing WORK_DIR/hf
afterwards is the CLI's step (`xtune.cli.train`), so the engine never depends on the exporters.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("xtune")


@dataclass(frozen=True)
class TrainRequest:
    """What `xtune train` was asked to do (the engine's input besides the registry)."""

    recipe: Path
    options: tuple[str, ...] = ()  # --cfg-options KEY=VALUE ...
    work_dir: str | None = None
    deepspeed: str | None = None  # a preset name or a JSON file
    resume: str | None = None  # 'auto' or a checkpoint
    overwrite: bool = False
    seed: int | None = None
    launcher: str = "none"
    debug: bool = False

    @property
    def work_dir_or_default(self) -> str:
        return self.work_dir or str(Path("work_dirs") / Path(self.recipe).stem)


@dataclass
class TrainedRun:
    """What a finished run leaves in memory for the steps after it (the WORK_DIR/hf export)."""

    cfg: Any
    plan: Any  # xtune.plan.RunPlan
    llm: Any  # the trained model (peft or transformers), unwrapped
    tokenizer: Any  # a vision-language model's processor
    steps: int  # optimizer steps done
    final_loss: float | None
    method: Any  # the TuningMethod entry
    recipe: str
    work_dir: str
    rank: int = 0


def recipe_record(cfg, recipe_path: Path, options, trained) -> dict:
    """What every checkpoint stores about its recipe: the text after the top-level overrides, the dotted
    overrides applied on top, and the settings that define the trained tensors (checked by pth_to_hf)."""
    dotted = [o for o in options if "." in o.partition("=")[0]]
    from xtune.recipe import recipe_source

    return {"name": recipe_path.stem, "text": recipe_source(cfg), "dotted_options": dotted,
            "method": {"type": trained.method.name, **trained.settings},
            "model_adapter": trained.adapter.name if trained.adapter is not None else None,
            "pretrained_model_name_or_path": str(cfg.model.get("pretrained_model_name_or_path", ""))}


def checked_recipe(request: TrainRequest, registry):
    """(the loaded recipe, its run plan), or the ConfigError that lists every problem (`preflight`)."""
    from xtune.engine.checks import preflight
    from xtune.recipe import load_recipe

    extra = {"seed": request.seed} if request.seed is not None else {}
    cfg = load_recipe(Path(request.recipe), list(request.options), extra)
    plan = preflight(cfg, registry, work_dir=request.work_dir_or_default, deepspeed=request.deepspeed,
                     resume=request.resume, recipe=Path(request.recipe).stem)
    return cfg, plan


def check_before_launch(request: TrainRequest, registry, world_size: int) -> None:
    """What each process of a multi-process run would find wrong, found once before they start: the recipe
    (preflight), the work dir's previous run, and the data, built now (and cached, so the processes read
    it back instead of building it again)."""
    from xtune.checkpoint.layout import find_resume_checkpoint
    from xtune.engine import data_setup
    from xtune.engine.console import console_logging
    from xtune.engine.workdir import check_previous_run
    from xtune.models.build import recipe_processor, recipe_tokenizer
    from xtune.plan import data_settings

    console_logging()
    cfg, plan = checked_recipe(request, registry)
    check_previous_run(Path(request.work_dir_or_default), resume=request.resume, overwrite=request.overwrite)
    from xtune.engine.sequence_parallel import check_layout, model_heads

    check_layout(plan.training.sequence_parallel, world_size, **model_heads(cfg))
    checked_layout(plan, world_size, find_resume_checkpoint(request.resume, request.work_dir_or_default))
    processor = recipe_processor(cfg, registry)
    tokenizer = processor.tokenizer if processor is not None else recipe_tokenizer(cfg, registry)
    data_setup.training_data(cfg, data_settings(plan, cfg, registry), registry, tokenizer, processor)


def checked_layout(plan, world_size: int, resume_from: str | None):
    """How this run cuts its global batch (`RunLayout`, stored in its checkpoints); a checkpoint to resume
    that another cut cannot continue is refused here, before the model loads."""
    from xtune.checkpoint.run_layout import RunLayout, check_resume_layout

    layout = RunLayout(world_size=world_size, batch_size=plan.training.batch_size,
                       accumulation=plan.training.accumulation, deepspeed=bool(plan.training.deepspeed))
    if resume_from:
        check_resume_layout(resume_from, layout)
    return layout


def train(request: TrainRequest, registry) -> TrainedRun:
    """Check everything, then train while holding the work dir's lock."""
    from xtune.engine.workdir import check_previous_run, locked, removed_if_untrained

    cfg, plan = checked_recipe(request, registry)
    from xtune.engine.sequence_parallel import check_layout, model_heads

    # before any data is built: a long-context recipe started in too few processes
    check_layout(plan.training.sequence_parallel, int(os.environ.get("WORLD_SIZE", "1") or 1),
                 **model_heads(cfg))
    work_dir = request.work_dir_or_default
    with removed_if_untrained(Path(work_dir)) as state, locked(Path(work_dir)):
        check_previous_run(Path(work_dir), resume=request.resume, overwrite=request.overwrite)
        runner, parts, trained, _zero3_loading = _prepare(cfg, plan, registry, request, work_dir)
        state.started = True
        return _run(runner, parts, trained, cfg, plan)


def _prepare(cfg, plan, registry, request: TrainRequest, work_dir: str):
    """(runner, its parts, the trainable model, the ZeRO-3 loading context to keep alive): everything a run
    needs, assembled in order."""
    from mmengine.runner import set_random_seed

    from xtune.checkpoint.layout import find_resume_checkpoint
    from xtune.engine import data_setup
    from xtune.engine.console import console_logging
    from xtune.engine.objective_setup import prepare_objective
    from xtune.engine.runner_setup import RunParts, build_runner
    from xtune.fileio import atomic_write_text
    from xtune.methods.common import count_parameters
    from xtune.models.build import build_trainable, recipe_processor, recipe_tokenizer
    from xtune.objectives.build import build_objective
    from xtune.plan import data_settings
    from xtune.schedule import plan_schedule

    console_logging()
    launcher, world_size = _distributed(request, plan)
    seed = plan.training.seed
    set_random_seed(seed, deterministic=bool(cfg.get("randomness", {}).get("deterministic", False)))
    resume_from = find_resume_checkpoint(request.resume, work_dir)
    precision = _precision(plan)
    processor = recipe_processor(cfg, registry)  # None for a text model
    tokenizer = processor.tokenizer if processor is not None else recipe_tokenizer(cfg, registry)
    data_cfg = data_settings(plan, cfg, registry)
    dataset, val_dataset = data_setup.training_data(cfg, data_cfg, registry, tokenizer, processor)
    sequence = _sequence_parallel(plan, cfg, world_size)
    if sequence is not None:  # rows cut into equal shards
        data_cfg = {**data_cfg, "pad_to_multiple_of": sequence.size}
    collate = data_setup.collator(cfg, data_cfg, tokenizer, processor)
    schedule = plan_schedule(plan.training, len(dataset), world_size // plan.training.sequence_parallel)
    layout = checked_layout(plan, world_size, resume_from)
    ds_config, zero3_loading = _deepspeed_config(plan, registry, schedule, precision, world_size)
    trained = build_trainable(cfg, registry, plan, precision=precision.name)
    if sequence is not None:
        sequence.install(trained.model)
    objective = prepare_objective(build_objective(cfg, registry), trained.model, dataset, collator=collate,
                                  batch_size=plan.training.batch_size, tokenizer=tokenizer, cfg=cfg,
                                  registry=registry, precision=precision.name, world_size=world_size)
    if resume_from:
        _check_resume_fits(trained.model, resume_from)
    parts = RunParts(name=plan.recipe, llm=trained.model, tokenizer=tokenizer, dataset=objective.dataset,
                     val_dataset=val_dataset, schedule=schedule, precision=precision, work_dir=work_dir,
                     launcher=launcher, ds_config=ds_config, resume_from=resume_from, seed=seed,
                     params=count_parameters(trained.model), world_size=world_size,
                     sampler=data_setup.sampler(objective.dataset, cfg, seed, schedule.accumulation,
                                                sequence),
                     dataloader=lambda ds, rows: data_setup.dataloader(ds, cfg, collate, rows),
                     registry=registry, quiet=not request.debug, objective=objective,
                     recipe=recipe_record(cfg, Path(request.recipe), request.options, trained),
                     processor=processor, layout=layout, sequence=sequence)
    runner = build_runner(cfg, parts)
    atomic_write_text(Path(work_dir) / Path(request.recipe).name, cfg.pretty_text)  # the resolved recipe
    atomic_write_text(Path(work_dir) / "plan.json", json.dumps(plan.to_dict(), indent=1) + "\n")
    return runner, parts, trained, zero3_loading


def _run(runner, parts, trained, cfg, plan) -> TrainedRun:
    """Train, with xtune's lines in the run's log file too; what the exports need afterwards."""
    from xtune.checkpoint.read import final_loss_from_message_hub
    from xtune.engine.console import in_log_file
    from xtune.schedule import unwrap_model

    schedule, (trainable, total) = parts.schedule, parts.params
    with in_log_file(runner):
        log.info(f"recipe {plan.recipe}: {schedule.max_steps} optimizer steps of {schedule.accumulation} x "
                 f"{plan.training.batch_size} rows x {parts.world_size} processes ({schedule.max_iters} "
                 f"micro-batches); {parts.precision.name}; trainable params {trainable:,} / {total:,}")
        if parts.objective.summary != "objective sft":
            log.info(parts.objective.summary)
        runner.train()
    return TrainedRun(cfg=cfg, plan=plan, llm=unwrap_model(runner.model).llm,
                      tokenizer=parts.processor if parts.processor is not None else parts.tokenizer,
                      steps=runner.iter, final_loss=final_loss_from_message_hub(runner.message_hub),
                      method=trained.method, recipe=plan.recipe, work_dir=parts.work_dir, rank=runner.rank)


def _distributed(request: TrainRequest, plan) -> tuple[str, int]:
    """(mmengine launcher, world size), with the process group made without CUDA where needed (and
    DeepSpeed's communication on top of it for DeepSpeed and for sequence parallel's all-to-all)."""
    import torch

    from xtune import compat
    from xtune.engine.launch import resolve_launcher

    launcher = resolve_launcher(request.launcher or "none")
    if launcher != "none" or request.deepspeed:
        compat.init_distributed_without_cuda(use_deepspeed=bool(request.deepspeed)
                                             or plan.training.sequence_parallel > 1)
        launcher = "pytorch"
    world_size = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    return launcher, world_size


def _sequence_parallel(plan, cfg, world_size: int):
    """This process's sequence-parallel group (`sequence_parallel_size` > 1), or None."""
    size = plan.training.sequence_parallel
    if size <= 1:
        return None
    from xtune.engine.sequence_parallel import SequenceParallel, check_layout, model_heads

    check_layout(size, world_size, **model_heads(cfg))
    return SequenceParallel(size)


def _precision(plan):
    """The run's precision for this machine, said once in the log (with a warning when it will be slow)."""
    from xtune.hardware import choose_precision, on_cuda, set_cpu_threads

    precision = choose_precision(plan.training.precision)
    log.info(str(precision) + ("" if on_cuda() else f"; {set_cpu_threads()}"))
    if precision.warning:
        log.warning(precision.warning)
    return precision


def _deepspeed_config(plan, registry, schedule, precision, world_size: int):
    """(the DeepSpeed config with its 'auto' values filled from the plan, the ZeRO-3 loading context):
    (None, None) without DeepSpeed. While the context lives, `from_pretrained` partitions the weights as
    they load (zero.Init)."""
    if not plan.training.deepspeed:
        return None, None
    from xtune.engine.deepspeed_config import fill_auto, load_deepspeed_config

    ds_config = fill_auto(load_deepspeed_config(plan.training.deepspeed, registry),
                          micro_batch=plan.training.batch_size, accumulation=schedule.accumulation,
                          max_norm=plan.training.max_norm, precision=precision.name, world_size=world_size)
    if ds_config.get("zero_optimization", {}).get("stage") != 3:
        return ds_config, None
    from transformers.integrations import HfDeepSpeedConfig

    return ds_config, HfDeepSpeedConfig(ds_config)


def _check_resume_fits(model, checkpoint: str) -> None:
    """A checkpoint of another model or of other method settings is refused in one line, before mmengine
    would print dozens of size mismatches and then fail in the optimizer."""
    from xtune.checkpoint.read import check_fits, read_checkpoint, without_heads
    from xtune.checkpoint.store import is_store

    if Path(checkpoint).is_dir() and not is_store(checkpoint):
        return  # DeepSpeed shards: DeepSpeed checks them itself

    weights = read_checkpoint(checkpoint)
    check_fits(model, without_heads(weights.state_dict), source=checkpoint, what="this run's model",
               hint="resume with the recipe and --cfg-options the checkpoint was trained with, or train "
                    "without --resume")
