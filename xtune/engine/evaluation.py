"""Generation metrics during training: a recipe's `evaluation_data` scored as `xtune eval` scores it.

A recipe (or `--cfg-options`) names a test file in `evaluation_data`; the training loop then answers its
records greedily with the model being trained, prompted with the recipe's chat template (as its sample
chats), at the last step and every `evaluation_steps` optimizer steps, and logs BLEU-4, ROUGE-1/2/L and
exact match beside the losses: on the console, in the run's log file and visualizer (as `eval_*`
scalars), in `loss_history.json`, and each step's predictions in `WORK_DIR/evaluation/step_N.jsonl`.
The file is read with the training data's dataset map (its columns, system prompt and self-cognition
names) unless `evaluation_dataset_map` names another. Without `evaluation_data` nothing of this runs.
A failure at run time is a warning: it never costs the run its checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("xtune")

SETTINGS = ("evaluation_data", "evaluation_dataset_map", "evaluation_steps", "evaluation_max_new_tokens",
            "evaluation_batch_size", "evaluation_limit")
METRICS = ("bleu-4", "rouge-1", "rouge-2", "rouge-l", "exact_match")


def load_records(cfg, registry) -> list:
    """The test records of the recipe's `evaluation_data` (the data layer's errors as they are)."""
    from xtune.data.records import map_data
    from xtune.evaluate.testset import load_test_set

    data = cfg.train_dataset
    name = cfg.get("evaluation_dataset_map")
    own = data.get("dataset_map")
    # the training data's map, unless it cannot read a test file (a mixture, preference pairs, prompts)
    same = (name is None and own in registry.dataset_maps and not registry.dataset_maps.get(own).combine
            and map_data(own, registry) == "sft")
    if same:
        name = own
    return load_test_set(str(cfg.evaluation_data), registry=registry, dataset_map=name,
                         limit=int(cfg.get("evaluation_limit") or 0) or None,
                         system=(data.get("system") or "") if same else "",
                         columns=dict(data.get("columns") or {}) if same else None,
                         self_cognition=tuple(data.get(k) or cfg.get(k)
                                              for k in ("self_cognition_name", "self_cognition_author")))


def evaluation_problems(cfg, registry) -> list[str]:
    """What is wrong with the recipe's evaluation settings, its test file included (read now, before any
    model loads, so that a bad record stops the run at its start rather than after training)."""
    if not cfg.get("evaluation_data"):
        return []
    problems = []
    data = cfg.get("evaluation_data")
    if not isinstance(data, str):
        problems.append(f"evaluation_data={data!r} must be the path of a test file")
    for key, least in (("evaluation_steps", 0), ("evaluation_max_new_tokens", 1),
                       ("evaluation_batch_size", 1), ("evaluation_limit", 0)):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            problems.append(f"{key}={value!r} must be an integer of at least {least}")
    if problems:
        return problems
    from xtune.errors import XtuneError

    try:
        load_records(cfg, registry)
    except XtuneError as exc:
        problems.append(f"evaluation_data: {exc}")
    return problems


class RunEvaluation:
    """`evaluation(llm, step)`: the model's metrics on the test records as `eval_*` values for the step's
    outputs ({} after a failure, which is logged as a warning)."""

    def __init__(self, cfg, tokenizer, *, registry, work_dir: str):
        self.records = load_records(cfg, registry)
        self.tokenizer, self.registry = tokenizer, registry
        self.template = cfg.train_dataset.get("prompt_template")
        self.batch_size = int(cfg.get("evaluation_batch_size"))
        self.max_new_tokens = int(cfg.get("evaluation_max_new_tokens"))
        self.folder = Path(work_dir) / "evaluation"
        self.source = Path(str(cfg.evaluation_data)).name

    def __call__(self, llm, step: int) -> dict:
        from xtune.evaluate.generate import recipe_prompting
        from xtune.evaluate.run import evaluate_model, predictions_jsonl

        try:
            prompting = recipe_prompting(self.template, self.tokenizer, llm, registry=self.registry)
            result = evaluate_model(llm, self.tokenizer, prompting, self.records, label=f"step {step}",
                                    batch_size=self.batch_size, max_new_tokens=self.max_new_tokens,
                                    progress=False)
        except Exception as exc:
            log.warning(f"evaluation at step {step} failed, training goes on: {type(exc).__name__}: {exc}")
            return {}
        m = result.metrics
        if _is_rank0():
            from xtune.fileio import atomic_write_text

            path = atomic_write_text(self.folder / f"step_{step}.jsonl", predictions_jsonl([result]))
            log.info(f"evaluation at step {step} on {self.source} ({m['records']} records, "
                     f"{m['seconds']:.1f} s): BLEU-4 {m['bleu-4']:.2f}, ROUGE-1 {m['rouge-1']:.2f}, "
                     f"ROUGE-2 {m['rouge-2']:.2f}, ROUGE-L {m['rouge-l']:.2f}, exact match "
                     f"{m['exact_match']:.1f}%; predictions: {path}")
        return {f"eval_{key}": float(m[key]) for key in METRICS}


def _is_rank0() -> bool:
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0
