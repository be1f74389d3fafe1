"""Everything that can be checked before a model loads, checked at once and reported together.

Loading a 7B model takes minutes; finding out afterwards that the data path has a typo is the most
common waste of time in fine-tuning. Each check appends a message; `preflight` raises one ConfigError
joining them all.
"""

from __future__ import annotations

import os
from pathlib import Path

from xtune.data.sources import looks_local
from xtune.errors import ConfigError, RegistryError, XtuneError


def _lookup(problems: list[str], table, name, what: str) -> None:
    if name in (None, ""):
        return
    try:
        table.get(name)
    except RegistryError as exc:
        problems.append(f"{what}: {exc}")


def _positive(problems: list[str], value, name: str, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value,
                                                            bool) and (value >= 0 if allow_zero
                                                                       else value > 0)
    if not ok:
        problems.append(f"{name}={value!r} must be a {'non-negative' if allow_zero else 'positive'} number")


def preflight(cfg, registry, *, work_dir: str | Path, deepspeed: str | None = None) -> None:
    """Raise ConfigError listing every problem found in the loaded recipe `cfg`."""
    problems: list[str] = []
    for section in ("tokenizer", "model", "method_cfg", "train_dataset", "train_dataloader", "optim_wrapper",
                    "train_cfg"):
        if not isinstance(cfg.get(section), dict):
            problems.append(f"the recipe has no {section} = dict(...) section")
    if problems:
        raise ConfigError("; ".join(problems))
    _lookup(problems, registry.model_adapters, cfg.model.get("adapter"), "model.adapter")
    _lookup(problems, registry.tuning_methods, cfg.method_cfg.get("type"), "method")
    data = cfg.train_dataset
    _lookup(problems, registry.dataset_maps, data.get("dataset_map"), "train_dataset.dataset_map")
    _lookup(problems, registry.chat_templates, data.get("prompt_template"), "train_dataset.prompt_template")
    data_path = data.get("data_path")
    if isinstance(data_path, str) and looks_local(data_path) and not Path(data_path).expanduser().exists():
        problems.append(f"data_path {data_path!r} does not exist")
    model_path = str(cfg.model.get("pretrained_model_name_or_path", ""))
    if not model_path.strip():
        problems.append("pretrained_model_name_or_path is empty")
    elif not model_path.startswith("modelscope://") and cfg.get("model_source") != "modelscope":
        from xtune.models.sources import resolve_source

        try:  # a local path is checked now (exists, a folder with config.json, no symlink loop)
            resolve_source(model_path, "local" if cfg.get("model_source") == "local" else "hf")
        except ConfigError as exc:
            problems.append(f"pretrained_model_name_or_path: {exc}")
    if deepspeed:
        from xtune.engine.deepspeed_config import load_deepspeed_config

        try:
            load_deepspeed_config(deepspeed, registry)
        except XtuneError as exc:
            problems.append(f"--deepspeed: {exc}")
    _positive(problems, cfg.train_dataloader.get("batch_size"), "batch_size")
    _positive(problems, cfg.optim_wrapper.get("accumulative_counts", 1), "accumulative_counts")
    _positive(problems, data.get("max_length"), "max_length")
    _positive(problems, cfg.optim_wrapper.get("optimizer", {}).get("lr"), "lr")
    _positive(problems, cfg.train_cfg.get("max_steps", 0), "max_steps", allow_zero=True)
    if not cfg.train_cfg.get("max_steps") and not cfg.train_cfg.get("max_epochs"):
        problems.append("train_cfg needs max_steps > 0 or max_epochs > 0")
    if cfg.get("on_nan") not in ("stop", "skip"):
        problems.append(f"on_nan={cfg.get('on_nan')!r} must be 'stop' or 'skip'")
    if not 0.0 <= float(cfg.get("val_ratio") or 0.0) < 1.0:
        problems.append(f"val_ratio={cfg.get('val_ratio')!r} must be in [0, 1)")
    problem = _writable(Path(work_dir))
    if problem:
        problems.append(problem)
    if problems:
        raise ConfigError("; ".join(problems))


def _writable(work_dir: Path) -> str | None:
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        probe = work_dir / f".xtune-write-test-{os.getpid()}"
        probe.write_text("ok", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        return f"work dir {str(work_dir)!r} is not writable ({exc.strerror or exc})"
    return None
