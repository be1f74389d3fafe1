"""The recipe's objective in a run: checked before any model loads, then given its reference and heads.

`objective_problems` belongs to the preflight (every problem reported together): the objective and its
settings, whether the dataset map yields the rows it trains on, and (`run_problems`, which `xtune estimate`
asks too) the limits of PPO, its reward model and a frozen reference copy. `prepare_objective` runs once
the trainable model exists: it builds the reference (the model with adapters off, a frozen copy, or
log-probs precomputed into the rows), the objective's extra trained heads and its own setup (PPO loads
its reward model).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from xtune.errors import ConfigError, XtuneError

log = logging.getLogger("xtune")

# Which dataset-map kinds each objective's rows can be made from.
ACCEPTS = {"sft": ("sft",), "pairs": ("pairs",), "unpaired": ("unpaired", "pairs"),
           "prompts": ("prompts", "sft", "pairs", "unpaired")}
# The dataset maps to suggest when a map yields the wrong kind of records.
MAPS_FOR = {"prompts": "prompt maps: gsm8k, gsm8k_alpaca, math, prompt, or any chat / preference map",
            "sft": "chat maps: alpaca, sharegpt, openai, ..."}


def objective_problems(cfg, registry, deepspeed: str | None, processes: int = 1) -> list[str]:
    """What is wrong with the recipe's objective, as preflight messages."""
    from xtune.data.records import map_data
    from xtune.objectives.build import objective_settings

    try:
        entry, settings = objective_settings(cfg, registry)
    except XtuneError as exc:
        return [f"objective: {exc}"]
    problems = []
    adapter = (cfg.get("model") or {}).get("adapter")
    if entry.data != "sft" and adapter in registry.model_adapters and \
            registry.model_adapters.get(adapter).model_kind != "llm":
        problems.append(f"objective {entry.name!r}: preference objectives train text models; {adapter} is a "
                        "vision-language model (train it with supervised fine-tuning: no objective section)")
    name = (cfg.get("train_dataset") or {}).get("dataset_map")
    if name in registry.dataset_maps:
        kind = map_data(name, registry)
        if kind not in ACCEPTS[entry.data]:
            problems.append(f"objective {entry.name!r} trains on {entry.data} but dataset map {name!r} "
                            f"yields {kind} records ("
                            + MAPS_FOR.get(entry.data, "preference maps: sharegpt_preference, preference, "
                                           "hh_rlhf, medicalgpt_preference, alpaca_preference, kto") + ")")
    if problem := _missing_reward_model(settings):
        problems.append(problem)
    if settings.get("precompute_ref_log_probs") and float(cfg.get("val_ratio") or 0):
        problems.append("objective.precompute_ref_log_probs=True computes the training rows only: set "
                        "val_ratio=0")
    method = _method(cfg, registry)
    if entry.head == "score" and method is not None and method.builder.startswith("xtune.methods.prompt:"):
        problems.append(f"objective {entry.name!r} scores with the model's own layers: method "
                        f"{method.name!r} (virtual tokens) does not combine with it; use lora, qlora, full")
    return problems + run_problems(cfg, registry, deepspeed=deepspeed, processes=processes)


def run_problems(cfg, registry, *, deepspeed: str | None, processes: int = 1) -> list[str]:
    """What the recipe's objective cannot do in this run: DeepSpeed, several processes, gradient accumulation,
    a validation split, a reward model that is none. One function for `xtune train`'s preflight and `xtune
    estimate`, so that estimate never prints figures for a run train refuses; it reads the recipe, the
    registry and config files only (no torch). An objective on prompts generates its own answers (PPO's
    rollout), in one process."""
    from xtune.plan import objective_plan

    objective = objective_plan(cfg, registry)
    problems, name = [], objective.name
    if objective.data == "prompts":
        if deepspeed:
            problems.append(f"objective {name!r} runs without DeepSpeed (drop --deepspeed)")
        if processes > 1:
            problems.append(f"objective {name!r} runs in one process, not {processes} (its rollout is not "
                            "distributed)")
        if int(cfg.optim_wrapper.get("accumulative_counts", 1) or 1) != 1:
            problems.append(f"objective {name!r} makes one optimizer update per rollout mini-batch: "
                            "set accumulative_counts=1")
        if float(cfg.get("val_ratio") or 0):
            problems.append(f"objective {name!r} has no validation loss: set val_ratio=0")
    if objective.settings.get("reward_model") and (
            problem := _reward_model_problem(str(objective.settings["reward_model"]))):
        problems.append(problem)
    method = _method(cfg, registry)
    if objective.reference and deepspeed and method is not None and not method.uses_peft:
        problems.append(f"objective {name!r} with method {method.name!r} needs a frozen reference copy, "
                        "which DeepSpeed does not manage: train with an adapter method, or without DeepSpeed")
    from xtune.methods.limits import method_problems

    return problems + method_problems(cfg, registry, deepspeed=deepspeed, processes=processes)


def _reward_model_problem(path: str) -> str | None:
    """PPO's reward model, when its folder is at hand, must be one: a causal LM would score with a random
    head, an adapter of one would not load. A folder not there yet is train's concern only (below): the
    memory of a PPO run is estimated before its reward model is trained."""
    from xtune.models.reward import not_a_reward_model

    problem = not_a_reward_model(path)
    return f"objective.reward_model: {problem} (train one with a reward recipe and pass its WORK_DIR/hf)" \
        if problem else None


def _missing_reward_model(settings) -> str | None:
    """A local reward model path that is not there: train refuses it before any data or model loads."""
    from pathlib import Path

    path = str(settings.get("reward_model") or "")
    if path.startswith((".", "/", "~")) and not Path(path).expanduser().exists():
        return f"objective.reward_model {path!r} does not exist"
    return None


def _method(cfg, registry):
    """The recipe's tuning method entry, or None when its name is unknown (reported by the preflight)."""
    name = cfg.method_cfg.get("type")
    return registry.tuning_methods.get(name) if name in registry.tuning_methods else None


@dataclass
class ObjectiveParts:
    objective: Any
    reference: Any
    heads: dict
    dataset: Any
    summary: str = ""  # one line for the run's log: the objective, its settings and its reference


def prepare_objective(built, llm, dataset, *, collator, batch_size: int, tokenizer, cfg, registry,
                      precision: str, world_size: int) -> ObjectiveParts:
    """The objective ready to train `llm`: reference, heads, setup; precomputed reference log-probs are
    added to `dataset` as `ref_logps`."""
    objective = built.objective
    reference, said = None, []
    if built.entry.reference and getattr(objective, "uses_reference", True):  # GRPO at beta=0: none
        from xtune.objectives.reference import make_reference, precompute_ref_logps

        reference = make_reference(objective, llm)
        if reference.mode == "precomputed":
            log.info("objective %s: computing the reference log-probs of %d rows", built.entry.name,
                     len(dataset))
            dataset = precompute_ref_logps(dataset, llm, collator, batch_size)
        said.append(f"reference: {reference.describe()}")
    heads = objective.heads(llm) if hasattr(objective, "heads") else {}
    if hasattr(objective, "setup"):
        if world_size > 1:
            raise ConfigError(f"objective {built.entry.name!r} runs in one process",
                              hint="unset NPROC_PER_NODE")
        from xtune.models.build import model_adapter

        objective.setup(llm=llm, tokenizer=tokenizer, template=cfg.train_dataset.get("prompt_template"),
                        registry=registry, precision=precision, adapter=model_adapter(cfg, registry))
        said.append(objective.describe())
    settings = ", ".join(f"{k}={v!r}" for k, v in built.settings.items())
    summary = f"objective {built.entry.name}" + (f" ({settings})" if settings else "") + \
        "".join(f"; {s}" for s in said)
    # the run logs `summary` once its log file exists (engine.train), to the console and the file
    return ObjectiveParts(objective, reference, heads, dataset, summary)
