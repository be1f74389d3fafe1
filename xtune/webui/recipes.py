"""The Train tab's recipe side: the catalogue filtered, a recipe's settings read for the form, and the form
turned back into `--cfg-options` that differ from the recipe (so the command shown stays short and says
exactly what the page changed).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from xtune.errors import UsageError

# Form fields that are top-level recipe settings, with their type: the form shows the recipe's value and
# an override is written only when the page's value differs.
TOP_LEVEL = {
    "max_epochs": int,
    "max_steps": int,
    "max_length": int,
    "batch_size": int,
    "accumulative_counts": int,
    "lr": float,
    "log_interval": int,
    "method": str,
}
LORA = {
    "lora_r": "r",
    "lora_alpha": "lora_alpha",
    "lora_dropout": "lora_dropout",
    "lora_targets": "target_modules",
}
QUANT = {
    "none": None,
    "4-bit": {
        "load_in_4bit": True,
        "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": "auto",
    },
    "8-bit": {"load_in_8bit": True},
}
PAGE_DEFAULTS = {"log_interval": 1}  # the live curves want every step


def model_families(model: str, registry, paths) -> set[str] | None:
    """The model adapter names that fit the chosen model: a registered model's family, a local folder's
    families by its config.json `model_type`; None when nothing is chosen (no filter)."""
    model = (model or "").strip()
    if not model:
        return None
    if model in registry.models:
        return {registry.models.get(model).family}
    try:
        config = paths.local(model, "model") / "config.json"
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (UsageError, OSError, ValueError):
        return set()
    return {a.name for a in registry.model_adapters if model_type in a.model_types}


def filter_recipes(registry, paths, *, model="", method="", objective="", dataset="", search="") -> list[str]:
    """Recipe names matching every filter given (search: a substring or glob, as `list-cfg -p`)."""
    families = model_families(model, registry, paths)
    out = []
    for r in registry.recipes:
        if families is not None and r.family not in families:
            continue
        if (method and r.method != method) or (dataset and r.dataset != dataset):
            continue
        if objective and (r.objective or "sft") != objective:
            continue
        if search and not _matches(r.name, search):
            continue
        out.append(r.name)
    return sorted(out)


def _matches(name: str, pattern: str) -> bool:
    """`list-cfg -p`'s rule: a glob when the pattern has * ? [, else a case-insensitive substring."""
    import fnmatch

    name, pattern = name.lower(), pattern.strip().lower()
    return fnmatch.fnmatchcase(name, pattern) if any(c in pattern for c in "*?[") else pattern in name


def recipe_defaults(cfg) -> dict:
    """The form's values from a loaded recipe: schedule, method and LoRA settings, quantisation, objective
    settings (as `key=value` text), and the model and data it names."""
    values = {k: cfg.get(k) for k in TOP_LEVEL}
    values.update({k: v for k, v in PAGE_DEFAULTS.items()})
    method_cfg = dict(cfg.get("method_cfg") or {})
    for field, key in LORA.items():
        value = method_cfg.get(key)
        values[field] = ", ".join(value) if isinstance(value, (list, tuple)) else value
    quant = dict((cfg.get("model") or {}).get("quantization") or {})
    values["quantization"] = (
        "4-bit" if quant.get("load_in_4bit") else "8-bit" if quant.get("load_in_8bit") else "none"
    )
    objective = dict(cfg.get("objective") or {})
    values["objective"] = objective.get("type", "sft")
    values["objective_settings"] = " ".join(
        f"{k}={v!r}"
        for k, v in objective.items()
        if k != "type" and isinstance(v, (int, float, str, bool, type(None)))
    )
    values["model"] = cfg.get("pretrained_model_name_or_path") or ""
    values["data"] = cfg.get("data_path") or ""
    values["data_format"] = cfg.get("dataset_map") or ""
    return values


def _differs(value, default) -> bool:
    if value is None or value == "":
        return False
    if isinstance(default, float) or isinstance(value, float):
        try:
            return default is None or abs(float(value) - float(default)) > 1e-12 * max(
                1.0, abs(float(default))
            )
        except (TypeError, ValueError):
            return True
    return str(value) != str(default)


def _literal(value) -> str:
    """A value as --cfg-options reads it back (numbers and plain words as they are)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def form_options(form: dict, defaults: dict) -> list[str]:
    """--cfg-options for what the form changes from the recipe. `form` holds resolved paths for model and
    data (already confined), the settings, and free `extra` options the user typed."""
    options = []
    for key in ("model", "data", "data_format"):
        target = {
            "model": "pretrained_model_name_or_path",
            "data": "data_path",
            "data_format": "dataset_map",
        }[key]
        if form.get(key) and str(form[key]) != str(defaults.get(key)):
            options.append(f"{target}={form[key]}")
    for key, kind in TOP_LEVEL.items():
        value = form.get(key)
        if _differs(value, defaults.get(key) if key not in PAGE_DEFAULTS else None):
            options.append(f"{key}={_literal(kind(value))}")
    for field, key in LORA.items():
        if defaults.get(field) is not None and _differs(form.get(field), defaults.get(field)):
            value = form[field]
            if field == "lora_targets" and "," in str(value):
                value = [t.strip() for t in str(value).split(",") if t.strip()]
            options.append(f"method_cfg.{key}={_literal(value)}")
    if form.get("quantization") and form["quantization"] != defaults.get("quantization"):
        options.append(f"model.quantization={QUANT[form['quantization']]!r}")
    options += _objective_options(
        form.get("objective_settings") or "", defaults.get("objective_settings") or ""
    )
    options += shlex.split(form.get("extra") or "")
    return options


def _objective_options(text: str, default: str) -> list[str]:
    """`objective.KEY=VALUE` for each item of the objective settings text that the page changed."""

    def items(s: str) -> dict:
        try:
            parts = shlex.split(s)
        except ValueError as exc:
            raise UsageError(f"objective settings {s!r}: {exc}") from None
        bad = [p for p in parts if "=" not in p]
        if bad:
            raise UsageError(f"objective settings: {bad[0]!r} is not KEY=VALUE", hint="e.g. beta=0.2")
        return dict(p.split("=", 1) for p in parts)

    old = items(default)
    return [f"objective.{k}={v}" for k, v in items(text).items() if old.get(k) != v]


def recipe_path(name: str, registry) -> Path:
    if not name or name not in registry.recipes:
        raise UsageError(f"recipe {name!r}: pick one from the list", hint="the filters above narrow it")
    return Path(registry.recipes.get(name).path)
