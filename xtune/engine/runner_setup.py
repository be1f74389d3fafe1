"""Assembling the mmengine runner: Runner without DeepSpeed, FlexibleRunner + DeepSpeedStrategy with it,
with xtune's runner hooks in place of mmengine's default checkpoint hook."""

from __future__ import annotations

from xtune.engine.schedule import Schedule, optim_wrapper_cfg, param_schedulers


def build_hooks(cfg, *, tokenizer, dataset, val_loader, schedule: Schedule, params, world_size: int):
    from xtune.engine.chat_hook import EvaluateChatHook
    from xtune.engine.checkpoints import AtomicCheckpointHook
    from xtune.engine.hooks import DatasetInfoHook, LossHistoryHook, ThroughputHook, ValidationLossHook

    acc = schedule.accumulation
    ckpt = cfg.get("checkpoint") or {}
    history = LossHistoryHook(acc, plot=bool(cfg.get("plot_loss", True)))
    hooks = [
        DatasetInfoHook(dataset, tokenizer, describe=describe_dataset),
        ThroughputHook(acc, total_params=params[1], trainable_params=params[0], world_size=world_size,
                       gradient_checkpointing=bool(cfg.model.get("gradient_checkpointing"))),
        history,
        AtomicCheckpointHook(interval=int(ckpt.get("interval", 0) or 0), accumulation=acc,
                             max_keep_ckpts=int(ckpt.get("max_keep_ckpts", -1) or -1)),
    ]
    chat = cfg.get("evaluate_chat") or {}
    if chat.get("inputs"):
        hooks.append(EvaluateChatHook(tokenizer, chat["inputs"], every=int(chat.get("every", 0) or 0),
                                      accumulation=acc, template=cfg.train_dataset.get("prompt_template"),
                                      system=chat.get("system", ""),
                                      max_new_tokens=int(chat.get("max_new_tokens", 256))))
    if val_loader is not None:
        every = int(cfg.get("val_steps") or ckpt.get("interval", 0) or 0)
        hooks.append(ValidationLossHook(val_loader, every=every, accumulation=acc, history=history))
    return hooks


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


def build_runner(cfg, *, name: str, llm, tokenizer, dataset, val_dataset, schedule: Schedule, work_dir: str, launcher: str,
                 ds_config, resume_from, seed: int, params, world_size: int, sampler, dataloader):
    from mmengine.hooks import DistSamplerSeedHook, IterTimerHook, LoggerHook, ParamSchedulerHook

    from xtune.engine.compat import (
        ddp_wrapper_cfg,
        deepspeed_strategy_with_resume_hooks,
        fix_deepspeed_optimizer_registration,
    )
    from xtune.engine.model import CausalLMModel

    acc = schedule.accumulation
    val_loader = None
    if val_dataset is not None:
        from mmengine.runner import Runner
        from torch.utils.data import SequentialSampler

        val_loader = Runner.build_dataloader(dataloader(val_dataset, SequentialSampler(val_dataset)))
    log_every = max(1, int(cfg.get("log_interval", 10) or 10)) * acc
    common = dict(
        experiment_name=experiment_name(name),
        model=CausalLMModel(llm, on_nan=cfg.get("on_nan", "stop")),
        work_dir=work_dir,
        train_dataloader=dataloader(dataset, sampler),
        train_cfg=dict(type="IterBasedTrainLoop", max_iters=schedule.max_iters),
        optim_wrapper=optim_wrapper_cfg(cfg.optim_wrapper, deepspeed=ds_config is not None),
        param_scheduler=param_schedulers(cfg.get("param_scheduler"), schedule),
        default_hooks=dict(timer=dict(type=IterTimerHook), logger=dict(type=LoggerHook, interval=log_every),
                           param_scheduler=dict(type=ParamSchedulerHook), checkpoint=None,
                           sampler_seed=dict(type=DistSamplerSeedHook)),
        custom_hooks=build_hooks(cfg, tokenizer=tokenizer, dataset=dataset, val_loader=val_loader,
                                 schedule=schedule, params=params, world_size=world_size),
        randomness=dict(seed=seed, deterministic=bool((cfg.get("randomness") or {}).get("deterministic"))),
        launcher=launcher,
        visualizer=dict(type="Visualizer", vis_backends=_vis_backends()),
        log_processor=dict(by_epoch=False, window_size=log_every),
        load_from=resume_from,
        resume=resume_from is not None,
    )
    if ds_config is None:
        from mmengine.runner import Runner

        if launcher != "none":
            common["cfg"] = dict(model_wrapper_cfg=ddp_wrapper_cfg())  # Runner reads it from its cfg
        return Runner(**common)
    from mmengine.runner import FlexibleRunner

    fix_deepspeed_optimizer_registration()
    frozen = params[0] < params[1]
    strategy = dict(type=deepspeed_strategy_with_resume_hooks(), config=ds_config, exclude_frozen_parameters=frozen or None,
                    steps_per_print=ds_config.get("steps_per_print", 10**10))
    return FlexibleRunner(strategy=strategy, **common)


def _vis_backends() -> list[dict]:
    import importlib.util

    backends = [dict(type="LocalVisBackend")]
    if importlib.util.find_spec("tensorboard") is not None:
        backends.append(dict(type="TensorboardVisBackend"))
    return backends
