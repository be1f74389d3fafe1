"""Everything that can be checked before a model loads, checked at once and reported together.

Loading a 7B model takes minutes; finding out afterwards that the data path has a typo, a model setting
is misspelt, `r=0`, or the checkpoint to resume from is truncated is the most common waste of time in
fine-tuning. Each check appends a message; `preflight` raises one ConfigError joining them all.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from xtune.data.sources import looks_local
from xtune.engine.checks_model import check_method, check_model_section, check_resume
from xtune.errors import ConfigError, RegistryError, XtuneError

SECTIONS = ("tokenizer", "model", "method_cfg", "train_dataset", "train_dataloader", "optim_wrapper",
            "train_cfg")


def _lookup(problems: list[str], table, name, what: str) -> None:
    if name in (None, ""):
        return
    try:
        table.get(name)
    except RegistryError as exc:
        problems.append(f"{what}: {exc}")


def _positive(problems: list[str], value, name: str, allow_zero: bool = False) -> None:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and (value >= 0 if allow_zero else value > 0)):
        problems.append(f"{name}={value!r} must be a {'non-negative' if allow_zero else 'positive'} number")


def preflight(cfg, registry, *, work_dir: str | Path, deepspeed: str | None = None, resume: str | None = None,
              recipe: str = ""):
    """The run plan (`xtune.plan.RunPlan`) of the loaded recipe `cfg`, or a ConfigError listing every
    problem found in it."""
    problems = [f"the recipe has no {section} = dict(...) section" for section in SECTIONS
                if not isinstance(cfg.get(section), dict)]
    if problems:
        raise ConfigError("; ".join(problems))
    _names(problems, cfg, registry)
    _paths(problems, cfg, registry)
    check_model_section(problems, cfg)
    check_method(problems, cfg, registry)
    if deepspeed:
        from xtune.engine.deepspeed_config import load_deepspeed_config

        try:
            load_deepspeed_config(deepspeed, registry)
        except XtuneError as exc:
            problems.append(f"--deepspeed: {exc}")
    _numbers(problems, cfg)
    from xtune.engine.sequence_parallel import recipe_problems

    problems += recipe_problems(cfg)
    from xtune.engine.objective_setup import objective_problems

    # each process of a launched run (torchrun sets WORLD_SIZE) refuses what runs in one process only
    problems += objective_problems(cfg, registry, deepspeed, int(os.environ.get("WORLD_SIZE", "1") or 1))
    from xtune.engine.evaluation import evaluation_problems

    problems += evaluation_problems(cfg, registry)
    problem = _writable(Path(work_dir))
    if problem:
        problems.append(problem)
    check_resume(problems, resume, work_dir)
    if problems:
        raise ConfigError("; ".join(problems))
    from xtune.estimate import memory_warning  # advice only: a run that may not fit still starts
    from xtune.plan import resolve_plan

    plan = resolve_plan(cfg, registry, recipe=recipe, deepspeed=deepspeed)
    if warning := memory_warning(cfg, registry, plan):
        print(warning, file=sys.stderr)
    return plan


def _names(problems: list[str], cfg, registry) -> None:
    """Every registry name the recipe uses exists."""
    _lookup(problems, registry.model_adapters, cfg.model.get("adapter"), "model.adapter")
    _lookup(problems, registry.tuning_methods, cfg.method_cfg.get("type"), "method")
    data = cfg.train_dataset
    _lookup(problems, registry.dataset_maps, data.get("dataset_map"), "train_dataset.dataset_map")
    _lookup(problems, registry.chat_templates, data.get("prompt_template"), "train_dataset.prompt_template")


def _paths(problems: list[str], cfg, registry) -> None:
    """Local data and model paths exist (and a model path is a model folder or a GGUF file)."""
    data_path = cfg.train_dataset.get("data_path")
    if isinstance(data_path, str) and looks_local(data_path) and not Path(data_path).expanduser().exists():
        problems.append(f"data_path {data_path!r} does not exist")
    model_path = str(cfg.model.get("pretrained_model_name_or_path", ""))
    if not model_path.strip():
        problems.append("pretrained_model_name_or_path is empty")
    elif not model_path.startswith("modelscope://") and cfg.get("model_source") != "modelscope":
        from xtune.models.sources import resolve_source

        try:  # a local path is checked now (exists, a folder with config.json, no symlink loop)
            src = resolve_source(model_path, "local" if cfg.get("model_source") == "local" else "hf")
        except ConfigError as exc:
            problems.append(f"pretrained_model_name_or_path: {exc}")
            return
        if src.is_local and not src.gguf_file:
            _legacy_layout(problems, src.path, bool(cfg.model.get("trust_remote_code")), registry)


def _legacy_layout(problems: list[str], path: str, trust_remote_code: bool, registry) -> None:
    """A local checkpoint in a hub-code layout with no native twin (Baichuan 13B's ALiBi ...) is refused now,
    with the reason, rather than after the data has been prepared."""
    from xtune.models.legacy import find_legacy, read_raw_config, refuse_unknown_remote_code

    try:
        raw = read_raw_config(path)
        legacy = find_legacy(path, raw, registry=registry, trust_remote_code=trust_remote_code)
        if legacy is None and not trust_remote_code:
            refuse_unknown_remote_code(path, raw)
    except ConfigError as exc:
        problems.append(f"pretrained_model_name_or_path: {exc}")


def _numbers(problems: list[str], cfg) -> None:
    _positive(problems, cfg.train_dataloader.get("batch_size"), "batch_size")
    _positive(problems, cfg.optim_wrapper.get("accumulative_counts", 1), "accumulative_counts")
    _positive(problems, cfg.train_dataset.get("max_length"), "max_length")
    _positive(problems, cfg.optim_wrapper.get("optimizer", {}).get("lr"), "lr")
    _positive(problems, cfg.train_cfg.get("max_steps", 0), "max_steps", allow_zero=True)
    if not cfg.train_cfg.get("max_steps") and not cfg.train_cfg.get("max_epochs"):
        problems.append("train_cfg needs max_steps > 0 or max_epochs > 0")
    if cfg.get("on_nan") not in ("stop", "skip"):
        problems.append(f"on_nan={cfg.get('on_nan')!r} must be 'stop' or 'skip'")
    if not 0.0 <= float(cfg.get("val_ratio") or 0.0) < 1.0:
        problems.append(f"val_ratio={cfg.get('val_ratio')!r} must be in [0, 1)")


def _writable(work_dir: Path) -> str | None:
    """Whether the work dir can be made and written, without making it (a failed check leaves nothing)."""
    existing = work_dir
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        return f"work dir {str(work_dir)!r} is not writable: {str(existing)!r} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"work dir {str(work_dir)!r} is not writable ({str(existing)!r} is read-only)"
    return None
