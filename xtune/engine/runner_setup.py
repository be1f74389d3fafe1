"""Assembling the mmengine runner: Runner without DeepSpeed, FlexibleRunner + DeepSpeedStrategy with it,
with xtune's runner hooks in place of mmengine's default checkpoint and scheduler hooks."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

from xtune.engine.optim import OptimizerStepSchedulerHook, optim_wrapper_cfg, param_schedulers
from xtune.hardware import Precision
from xtune.schedule import Schedule


@dataclass
class RunParts:
    """Everything the runner is assembled from, decided by `xtune.engine.train`."""

    name: str
    llm: Any
    tokenizer: Any
    dataset: Any
    val_dataset: Any
    schedule: Schedule
    precision: Precision
    work_dir: str
    launcher: str
    ds_config: dict | None
    resume_from: str | None
    seed: int
    params: tuple[int, int]  # (trainable, total)
    world_size: int
    sampler: Any
    dataloader: Any  # fn(dataset, sampler) -> mmengine dataloader dict
    registry: Any = None
    recipe: dict | None = None  # what every checkpoint records about the recipe (train.recipe_record)
    quiet: bool = True  # hide mmengine's environment, config and hook tables from the console
    objective: Any = None  # engine.objective_setup.ObjectiveParts (None: SFT)


def build_hooks(cfg, parts: RunParts, val_loader) -> list:
    from xtune.engine.chat_hook import EvaluateChatHook
    from xtune.engine.checkpoints import AtomicCheckpointHook
    from xtune.engine.hooks import DatasetInfoHook, LossHistoryHook, ThroughputHook, ValidationLossHook

    schedule = parts.schedule
    ckpt = cfg.get("checkpoint") or {}
    history = LossHistoryHook(schedule, plot=bool(cfg.get("plot_loss", True)))
    hooks = [DatasetInfoHook(parts.dataset, parts.tokenizer, describe=describe_dataset),
             ThroughputHook(schedule, total_params=parts.params[1], trainable_params=parts.params[0],
                            world_size=parts.world_size,
                            gradient_checkpointing=bool(cfg.model.get("gradient_checkpointing"))), history,
             OptimizerStepSchedulerHook(schedule),
             AtomicCheckpointHook(interval=int(ckpt.get("interval", 0) or 0), schedule=schedule,
                                  max_keep_ckpts=int(ckpt.get("max_keep_ckpts", -1) or -1),
                                  recipe=parts.recipe)]
    chat = cfg.get("evaluate_chat") or {}
    if chat.get("inputs") and hasattr(parts.llm, "generate") and not _scores(parts.llm):
        hooks.append(
            EvaluateChatHook(parts.tokenizer, chat["inputs"], every=int(chat.get("every", 0) or 0),
                             schedule=schedule, template=cfg.train_dataset.get("prompt_template"),
                             registry=parts.registry, system=chat.get("system", ""),
                             max_new_tokens=int(chat.get("max_new_tokens", 256))))
    if val_loader is not None:
        every = int(cfg.get("val_steps") or ckpt.get("interval", 0) or 0)
        hooks.append(ValidationLossHook(val_loader, every=every, schedule=schedule, history=history))
    return hooks


def _scores(llm) -> bool:
    """A reward model (a score head, no language-model head): it has no sample chats to show."""
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    return type(base).__name__.endswith("ForSequenceClassification")


def describe_dataset(dataset, tokenizer) -> str:
    """Statistics and the first row rendered with its trained spans in [[ ]] (the data pipeline's views)."""
    from xtune.data.inspect import dataset_stats, format_stats, render_sample

    sample = render_sample(dataset[0], tokenizer)
    return f"{format_stats(dataset_stats(dataset))}\nfirst sample, trained text in [[ ]]:\n{sample[0]}"


_RUNS = [0]


def experiment_name(recipe: str) -> str:
    """Unique per runner: mmengine caches loggers and visualizers by this name, so a second run in the same
    process (tests, notebooks) would otherwise write into the first run's log folder."""
    import os
    import time

    _RUNS[0] += 1
    return f"{recipe}_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}_{_RUNS[0]}"


def build_runner(cfg, parts: RunParts):
    from mmengine.hooks import DistSamplerSeedHook, IterTimerHook, LoggerHook

    from xtune.compat import ddp_wrapper_cfg

    val_loader = _val_loader(parts)
    log_every = parts.schedule.iters(max(1, int(cfg.get("log_interval", 10) or 10)))
    common = dict(experiment_name=experiment_name(parts.name),
                  model=_model(cfg, parts), work_dir=parts.work_dir,
                  train_dataloader=parts.dataloader(parts.dataset, parts.sampler),
                  train_cfg=dict(type="IterBasedTrainLoop", max_iters=parts.schedule.max_iters),
                  optim_wrapper=optim_wrapper_cfg(cfg.optim_wrapper, parts.precision,
                                                  deepspeed=parts.ds_config is not None),
                  param_scheduler=param_schedulers(cfg.get("param_scheduler"), parts.schedule),
                  default_hooks=dict(timer=dict(type=IterTimerHook),
                                     logger=dict(type=LoggerHook, interval=log_every), param_scheduler=None,
                                     checkpoint=None, sampler_seed=dict(type=DistSamplerSeedHook)),
                  custom_hooks=build_hooks(cfg, parts, val_loader),
                  randomness=dict(seed=parts.seed,
                                  deterministic=bool((cfg.get("randomness") or {}).get("deterministic"))),
                  launcher=parts.launcher, visualizer=dict(type="Visualizer", vis_backends=_vis_backends()),
                  log_processor=dict(by_epoch=False, window_size=log_every), load_from=parts.resume_from,
                  resume=parts.resume_from is not None)
    # The recipe itself, so that checkpoints' meta.cfg holds it (mmengine writes it there).
    common["cfg"] = cfg.copy()
    if parts.ds_config is None:
        if parts.launcher != "none":
            common["cfg"]["model_wrapper_cfg"] = ddp_wrapper_cfg()  # Runner reads it from its cfg
        return runner_class(deepspeed=False, quiet=parts.quiet)(**common)
    return runner_class(deepspeed=True, quiet=parts.quiet)(strategy=_deepspeed_strategy(parts), **common)


class _ConsoleNoise(logging.Filter):
    """Keeps mmengine's environment report, config dump and hook table out of the console (they stay in
    the log file): users see xtune's lines and the training progress."""

    NOISE = ("\n------------------------------------------------------------\nSystem environment",
             "Config:\n",
             "Hooks will be executed in the following order", "Distributed training is not used",
             "Checkpoints will be saved to", "The prefix is not set in optimizer",
             '"FileClient" will be deprecated', '"HardDiskBackend" is the alias',
             "Dataset Dataset has no metainfo")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.NOISE)


def quiet_console(logger) -> None:
    for handler in logger.handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.addFilter(_ConsoleNoise())


@functools.cache
def runner_class(deepspeed: bool, quiet: bool):
    """mmengine's Runner (or FlexibleRunner) without the config dump it would write as `<timestamp>.py`
    (xtune writes the resolved recipe as WORK_DIR/<recipe>.py), and with a quiet console unless --debug."""
    from mmengine.runner import FlexibleRunner, Runner

    base = FlexibleRunner if deepspeed else Runner

    class XtuneRunner(base):
        def dump_config(self) -> None:
            pass

        def build_logger(self, *args, **kwargs):
            logger = super().build_logger(*args, **kwargs)
            if quiet:
                quiet_console(logger)
            return logger

    return XtuneRunner


def _model(cfg, parts: RunParts):
    from xtune.engine.model import CausalLMModel

    objective = parts.objective
    if objective is None:
        return CausalLMModel(parts.llm, on_nan=cfg.get("on_nan", "stop"))
    return CausalLMModel(parts.llm, on_nan=cfg.get("on_nan", "stop"), objective=objective.objective,
                         reference=objective.reference, heads=objective.heads)


def _val_loader(parts: RunParts):
    if parts.val_dataset is None:
        return None
    from mmengine.runner import Runner
    from torch.utils.data import SequentialSampler

    return Runner.build_dataloader(parts.dataloader(parts.val_dataset, SequentialSampler(parts.val_dataset)))


def _deepspeed_strategy(parts: RunParts) -> dict:
    from xtune.compat import deepspeed_strategy_with_resume_hooks, fix_deepspeed_optimizer_registration

    fix_deepspeed_optimizer_registration()
    frozen = parts.params[0] < parts.params[1]
    return dict(type=deepspeed_strategy_with_resume_hooks(quiet_console if parts.quiet else None),
                config=parts.ds_config,
                exclude_frozen_parameters=frozen or None,
                steps_per_print=parts.ds_config.get("steps_per_print", 10**10))


def _vis_backends() -> list[dict]:
    import importlib.util

    backends = [dict(type="LocalVisBackend")]
    if importlib.util.find_spec("tensorboard") is not None:
        backends.append(dict(type="TensorboardVisBackend"))
    return backends
