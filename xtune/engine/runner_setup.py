"""Assembling the mmengine runner: Runner without DeepSpeed, FlexibleRunner + DeepSpeedStrategy with it,
running xtune's training loop (`xtune.engine.loop`) with the parts it needs (`LoopParts`), and the runner
hooks that remain for side concerns (data summary, loss history, checkpoint content). mmengine's own
checkpoint and scheduler hooks are off: the loop saves and steps the schedule."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from xtune.engine.optim import optim_wrapper_cfg, param_schedulers
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
    processor: Any = None  # a vision-language model's processor (its tokenizer is `tokenizer`)
    layout: Any = None  # checkpoint.run_layout.RunLayout: how the run cuts its global batch
    sequence: Any = None  # engine.sequence_parallel.SequenceParallel, or None


def build_hooks(cfg, parts: RunParts) -> list:
    from xtune.engine.checkpoints import CheckpointContentHook
    from xtune.engine.hooks import DatasetInfoHook, LossHistoryHook

    return [DatasetInfoHook(parts.dataset, parts.tokenizer, describe=describe_dataset),
            LossHistoryHook(plot=bool(cfg.get("plot_loss", True))),
            CheckpointContentHook(recipe=parts.recipe, layout=parts.layout, keep_all=_switches(cfg, parts))]


def _switches(cfg, parts: RunParts) -> bool:
    """The method changes which parameters train during the run: checkpoints keep every weight."""
    if parts.registry is None:
        return False
    name = (cfg.get("method_cfg") or {}).get("type")
    methods = parts.registry.tuning_methods
    return name in methods and methods.get(name).switches_parameters


def loop_parts(cfg, parts: RunParts):
    """What the training loop uses beside the runner, from the recipe's runtime settings."""
    from xtune.engine.checkpoints import CheckpointSaver
    from xtune.engine.loop import LoopParts
    from xtune.engine.samples import SampleChats

    ckpt = cfg.get("checkpoint") or {}
    chat = cfg.get("evaluate_chat") or {}
    chats = None
    if chat.get("inputs") and hasattr(parts.llm, "generate") and not _scores(parts.llm):
        chats = SampleChats(parts.tokenizer, chat["inputs"],
                            template=cfg.train_dataset.get("prompt_template"), registry=parts.registry,
                            system=chat.get("system", ""),
                            max_new_tokens=int(chat.get("max_new_tokens", 256)))
    evaluation = _evaluation(cfg, parts)
    save_every = int(ckpt.get("interval", 0) or 0)
    trainable, total = parts.params
    checkpointing = bool(cfg.model.get("gradient_checkpointing"))
    # forward 2N, backward 4N for trained weights and 2N for frozen ones, another forward when checkpointing
    flops = 6 * trainable + 4 * (total - trainable) + (2 * total if checkpointing else 0)
    saver = CheckpointSaver(int(ckpt.get("max_keep_ckpts", -1) or -1), layout=parts.layout)
    return LoopParts(schedule=parts.schedule, saver=saver, save_every=save_every,
                     log_every=max(1, int(cfg.get("log_interval", 10) or 10)), chats=chats,
                     chat_every=int(chat.get("every", 0) or 0), validation=_val_loader(parts),
                     validate_every=int(cfg.get("val_steps") or save_every), flops_per_token=float(flops),
                     world_size=parts.world_size, deepspeed=parts.ds_config is not None,
                     sequence=parts.sequence, evaluation=evaluation,
                     evaluate_every=int(cfg.get("evaluation_steps") or 0))


def _evaluation(cfg, parts: RunParts):
    """The recipe's `evaluation_data` scored during training (`engine.evaluation`), or None."""
    if not cfg.get("evaluation_data"):
        return None
    if parts.processor is not None or not hasattr(parts.llm, "generate") or _scores(parts.llm):
        import logging

        logging.getLogger("xtune").warning(
            "Warning: evaluation_data is scored on a text language model's answers; this run trains "
            f"{'a vision-language model' if parts.processor is not None else 'a reward model'}, so it is not")
        return None
    from xtune.engine.evaluation import RunEvaluation

    return RunEvaluation(cfg, parts.tokenizer, registry=parts.registry, work_dir=parts.work_dir)


def _scores(llm) -> bool:
    """A reward model (a score head, no language-model head): it has no sample chats to show."""
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    return type(base).__name__.endswith("ForSequenceClassification")


def describe_dataset(dataset, tokenizer) -> str:
    """Statistics and the first row rendered with its trained spans in [[ ]] (the data pipeline's views)."""
    from xtune.data.inspect import dataset_stats, format_stats, render_sample

    sample = render_sample(dataset[0], tokenizer)
    stats = dataset_stats(dataset)
    what = "first prompt, as the policy sees it" if stats["prompts"] else \
        "first sample, trained text in [[ ]]"
    return f"{format_stats(stats)}\n{what}:\n{sample[0]}"


def experiment_name(recipe: str) -> str:
    """Unique per runner: mmengine caches loggers and visualizers by this name, so a second run in the same
    process (tests, notebooks) would otherwise write into the first run's log folder."""
    import os
    import time
    import uuid

    return f"{recipe}_{time.strftime('%Y%m%d_%H%M%S')}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def build_runner(cfg, parts: RunParts):
    from mmengine.hooks import DistSamplerSeedHook, IterTimerHook, LoggerHook

    from xtune.compat import ddp_wrapper_cfg

    log_every = max(1, int(cfg.get("log_interval", 10) or 10))
    common = dict(experiment_name=experiment_name(parts.name),
                  model=_model(cfg, parts), work_dir=parts.work_dir,
                  train_dataloader=parts.dataloader(parts.dataset, parts.sampler),
                  train_cfg=dict(type="XtuneTrainLoop"),
                  optim_wrapper=_optim_wrapper(cfg, parts),
                  param_scheduler=param_schedulers(cfg.get("param_scheduler"), parts.schedule),
                  default_hooks=dict(timer=dict(type=IterTimerHook),
                                     logger=dict(type=LoggerHook, interval=log_every), param_scheduler=None,
                                     checkpoint=None, sampler_seed=dict(type=DistSamplerSeedHook)),
                  custom_hooks=build_hooks(cfg, parts),
                  randomness=dict(seed=parts.seed,
                                  deterministic=bool((cfg.get("randomness") or {}).get("deterministic"))),
                  launcher=parts.launcher, visualizer=dict(type="Visualizer", vis_backends=_vis_backends()),
                  log_processor=dict(by_epoch=False, window_size=log_every), load_from=parts.resume_from,
                  resume=parts.resume_from is not None)
    # The recipe itself, so that checkpoints' meta.cfg holds it (mmengine writes it there).
    common["cfg"] = cfg.copy()
    loop = loop_parts(cfg, parts)
    if parts.ds_config is None:
        if parts.launcher != "none":
            common["cfg"]["model_wrapper_cfg"] = ddp_wrapper_cfg()  # Runner reads it from its cfg
        return runner_class(deepspeed=False, quiet=parts.quiet)(parts=loop, **common)
    return runner_class(deepspeed=True, quiet=parts.quiet)(parts=loop, strategy=_deepspeed_strategy(parts),
                                                           **common)


@functools.cache
def runner_class(deepspeed: bool, quiet: bool):
    """mmengine's Runner (or FlexibleRunner) that carries the training loop's `parts`, saves checkpoints as
    data (`CheckpointFiles`), skips the config dump it would write as `<timestamp>.py` (xtune writes the
    resolved recipe as WORK_DIR/<recipe>.py), and keeps a quiet console unless --debug."""
    from mmengine.runner import FlexibleRunner, Runner

    import xtune.engine.loop  # noqa: F401 - registers XtuneTrainLoop in mmengine's LOOPS
    from xtune.engine.checkpoints import CheckpointFiles

    # DeepSpeed writes its own folders (xtune.compat's strategy keeps their client state free of classes)
    bases = (FlexibleRunner,) if deepspeed else (CheckpointFiles, Runner)

    class XtuneRunner(*bases):
        def __init__(self, *, parts, **kwargs):
            self.parts = parts  # read by xtune.engine.loop.XtuneTrainLoop
            super().__init__(**kwargs)

        def dump_config(self) -> None:
            pass

        def build_logger(self, *args, **kwargs):
            logger = super().build_logger(*args, **kwargs)
            if quiet:
                from xtune.compat import quiet_console

                quiet_console(logger)
            return logger

    return XtuneRunner


def _optim_wrapper(cfg, parts: RunParts) -> dict:
    """mmengine's optim wrapper config: the recipe's optimizer, or the one the tuning method brings."""
    from xtune.engine.optim_build import method_optimizer_cfg
    from xtune.methods.common import resolve_method
    from xtune.models.build import model_adapter

    out = optim_wrapper_cfg(cfg.optim_wrapper, parts.precision, deepspeed=parts.ds_config is not None)
    if parts.registry is None:
        return out
    method, settings = resolve_method(cfg.method_cfg, parts.registry)
    return method_optimizer_cfg(out, method, settings, model_adapter(cfg, parts.registry))


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
    return dict(type=deepspeed_strategy_with_resume_hooks(parts.quiet),
                config=parts.ds_config,
                exclude_frozen_parameters=frozen or None,
                steps_per_print=parts.ds_config.get("steps_per_print", 10**10))


def _vis_backends() -> list[dict]:
    import importlib.util

    backends = [dict(type="LocalVisBackend")]
    if importlib.util.find_spec("tensorboard") is not None:
        backends.append(dict(type="TensorboardVisBackend"))
    return backends
