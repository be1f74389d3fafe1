"""Benchmarks through EleutherAI's lm-evaluation-harness (`pip install 'xtune[lm-eval]'`).

`xtune eval MODEL [--adapter A] --tasks mmlu,gsm8k|task.yaml` loads the model as every xtune command does
(a folder, a hub id, a GGUF file, base + PEFT adapter, 4/8-bit) and hands it to lm-eval's own Hugging
Face model class (`HFLM`), then runs `lm_eval.simple_evaluate`: the scores are lm-eval's, unchanged.
Offline, a task's data must be in the Hugging Face cache or in a local file: a task YAML of lm-eval's
own format may name a local `json` / `csv` file (`dataset_path: json`, `dataset_kwargs: {data_files:
...}`), a relative path being relative to the YAML. Every task is built, and its data read, before the
first model loads: an unknown name (with the closest ones), an unreadable YAML or data that is not
available offline is one error line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from xtune.errors import UsageError, closest

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass
class TaskSpecs:
    specs: list  # task names and task configs (dicts read from YAML files)
    manager: object  # lm_eval.tasks.TaskManager
    names: list[str]  # the leaf tasks they expand to


def _lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise UsageError("--tasks runs lm-evaluation-harness, which is not installed",
                         hint="pip install 'xtune[lm-eval]' (or pip install lm-eval)") from None
    for name in ("lm-eval", "lm_eval", "lm_eval.api.task", "lm_eval.evaluator"):
        logging.getLogger(name).setLevel(logging.ERROR)  # its INFO lines per task and request
    import datasets

    datasets.disable_progress_bars()  # "Generating test split" per task; lm-eval's own bars stay


def read_task_yaml(path: Path) -> dict:
    """A task YAML of lm-eval's format as a config, with a relative local data file made relative to the
    YAML's folder (lm-eval itself would look for it in the current folder)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        config = load_yaml(path)
    except Exception as exc:
        raise UsageError(f"--tasks {str(path)!r}: not a readable lm-eval task YAML: {exc}") from None
    files = (config.get("dataset_kwargs") or {}).get("data_files")
    if files is not None:
        config["dataset_kwargs"]["data_files"] = _beside(files, path.parent)
    return config


def _beside(files, folder: Path):
    if isinstance(files, dict):
        return {k: _beside(v, folder) for k, v in files.items()}
    if isinstance(files, list):
        return [_beside(v, folder) for v in files]
    if isinstance(files, str) and not Path(files).expanduser().is_absolute() and (folder / files).exists():
        return str((folder / files).resolve())
    return files


def _parse(text: str) -> tuple[list[Path], list[str]]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UsageError(f"--tasks {text!r}: no task names",
                         hint="e.g. --tasks mmlu,gsm8k or --tasks my.yaml")
    paths = [Path(t).expanduser() for t in items if t.lower().endswith(YAML_SUFFIXES)]
    for path in paths:
        if not path.is_file():
            raise UsageError(f"--tasks: task file {str(path)!r} does not exist")
    return paths, [t for t in items if not t.lower().endswith(YAML_SUFFIXES)]


def check_tasks(text: str) -> TaskSpecs:
    """The tasks of `--tasks`, each built once now (its data read) so that a problem is found before any
    model loads."""
    _lm_eval()
    from lm_eval.tasks import TaskManager

    paths, names = _parse(text)
    manager = TaskManager(include_defaults=bool(names))  # indexing lm-eval's own tasks takes seconds
    unknown = [n for n in names if n not in manager.all_tasks]
    if unknown:
        near = closest(unknown[0], manager.all_tasks, n=5)
        raise UsageError(f"unknown lm-eval task {unknown[0]!r}",
                         hint=f"did you mean: {', '.join(near)}?" if near else "see `lm-eval ls tasks`")
    specs = [read_task_yaml(p) for p in paths] + names
    return TaskSpecs(specs, manager, sorted(build_tasks(TaskSpecs(specs, manager, []))))


def build_tasks(tasks: TaskSpecs) -> dict:
    """lm-eval's Task objects, {name: Task}, their data read (offline: from the cache or local files)."""
    try:
        return tasks.manager.load(list(tasks.specs))["tasks"]
    except (ConnectionError, FileNotFoundError, OSError) as exc:
        raise UsageError(f"--tasks: a task's data is not available: {type(exc).__name__}: {exc}",
                         hint="offline, a task's data must be in the Hugging Face cache (HF_HOME) or a local "
                              "file named in its YAML") from None
    except (KeyError, ValueError, TypeError) as exc:
        raise UsageError(f"--tasks: {exc}") from None


def run_tasks(model, tokenizer, tasks: TaskSpecs, *, label: str, limit: int | None = None,
              num_fewshot: int | None = None, apply_chat_template: bool = False, batch_size: int = 8) -> dict:
    """lm-eval's results for one model: {"model": label, "tasks": {task: {metric: value}}} (lm-eval's
    values, fractions as it reports them, with their standard errors)."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    device = str(next(model.parameters()).device)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, device=device)
    from unittest import mock

    # lm-eval records the git commit of the current folder, and git prints "fatal: not a git repository"
    # outside one: xtune keeps none of that record
    with mock.patch("lm_eval.evaluator.get_git_commit_hash", lambda: None):
        results = lm_eval.simple_evaluate(model=lm, tasks=list(build_tasks(tasks).values()),
                                          task_manager=tasks.manager, limit=limit, num_fewshot=num_fewshot,
                                          apply_chat_template=apply_chat_template, log_samples=False,
                                          bootstrap_iters=1000)
    out = {}
    for task, metrics in results["results"].items():
        found = {key.split(",")[0]: value for key, value in metrics.items()
                 if "," in key and isinstance(value, (int, float))}
        found["samples"] = (results.get("n-samples", {}).get(task) or {}).get("effective")
        out[task] = found
    return {"model": label, "tasks": out}


def tasks_table(results: list[dict]) -> str:
    """One line per model, task and metric, as lm-eval reports them (fractions, with standard errors)."""
    from xtune.evaluate.run import plain_table

    rows = []
    for result in results:
        for task, metrics in sorted(result["tasks"].items()):
            for metric, value in metrics.items():
                if metric.endswith("_stderr") or metric == "samples":
                    continue
                err = metrics.get(f"{metric}_stderr")
                rows.append([result["model"], task, metric, f"{value:.4f}",
                             f"{err:.4f}" if isinstance(err, (int, float)) else "-",
                             str(metrics.get("samples") or "-")])
    return plain_table(["model", "task", "metric", "value", "stderr", "samples"], rows, text_columns=3)
