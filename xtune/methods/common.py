"""Applying a tuning method: merge the recipe's `method_cfg` over the method's defaults, call its builder.

Every builder has the same shape, `builder(model, settings, adapter) -> model`, takes its settings as
keyword-like dict entries and leaves exactly the parameters it trains with `requires_grad=True`.
"""

from __future__ import annotations

import logging

from xtune.errors import ConfigError, closest
from xtune.registry import import_object

log = logging.getLogger("xtune")


def resolve_method(method_cfg: dict, registry) -> tuple[object, dict]:
    """(TuningMethod entry, settings) for a recipe's `method_cfg` (whose `type` names the method).

    Settings that another registered method uses (a LoRA recipe switched to `method=full` still lists
    `r=64`) are dropped with a log line; anything else unknown is the builder's to reject.
    """
    cfg = dict(method_cfg)
    name = cfg.pop("type", None)
    entry = registry.tuning_methods.get(name)
    settings = dict(entry.defaults)
    settings.update(cfg)
    own = set(dict(entry.defaults))
    others = {k for m in registry.tuning_methods if m.name != entry.name for k, _ in m.defaults}
    foreign = sorted(k for k in settings if k not in own and k in others)
    if foreign:
        log.info("method %s ignores the settings %s (they belong to other methods)", name, ", ".join(foreign))
        for k in foreign:
            settings.pop(k)
    return entry, settings


def check_settings(method: str, settings: dict, allowed) -> None:
    """Reject settings a builder does not know, echoing them with the closest accepted names."""
    unknown = [k for k in settings if k not in allowed]
    if unknown:
        hints = {k: closest(k, allowed) for k in unknown}
        detail = "; ".join(f"{k!r}" + (f" (did you mean {', '.join(h)}?)" if h else "") for k,
                           h in hints.items())
        raise ConfigError(f"method_cfg for {method!r} has unknown settings: {detail}",
                          hint=f"accepted: {', '.join(sorted(allowed))}")


def apply_method(model, method_cfg: dict, registry, adapter=None):
    """The model made trainable by the recipe's `method_cfg` (resolved here; see `apply_resolved`)."""
    entry, settings = resolve_method(method_cfg, registry)
    return apply_resolved(model, entry, settings, adapter)


def apply_resolved(model, entry, settings: dict, adapter=None, finish=None):
    """The model made trainable by a resolved method (`resolve_method`); logs trainable / total parameters.
    `finish(model)` runs after the builder (a vision-language model sets its parts' trainability there)."""
    builder = import_object(entry.builder)
    model = builder(model, settings, adapter)
    if finish is not None:
        finish(model)
    freeze_named(model, getattr(adapter, "frozen_modules", ()))
    trainable, total = count_parameters(model)
    if trainable == 0:
        raise ConfigError(f"method {entry.name!r} left no trainable parameters in this model")
    log.info("method %s: trainable params %s / %s (%.4f%%)", entry.name, f"{trainable:,}", f"{total:,}",
             100.0 * trainable / max(total, 1))
    return model


def freeze_named(model, modules) -> None:
    """Keep the family's never-trained modules (`ModelAdapter.frozen_modules`) frozen, under any wrapper."""
    if not modules:
        return
    frozen = [name for name, p in model.named_parameters() if p.requires_grad and any(
        f".{m}." in f".{name}" for m in modules)]
    for name, p in model.named_parameters():
        if name in frozen:
            p.requires_grad_(False)
    if frozen:
        log.info("kept frozen (the family's own code would not train them freely): %s", ", ".join(frozen))


def train_all(model):
    """Every parameter trains (full tuning, and the low-memory methods whose optimizer narrows it)."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def freeze_all(model) -> None:
    for p in model.parameters():
        p.requires_grad_(False)


def uses_checkpointing(model) -> bool:
    """Whether activation (gradient) checkpointing is on; transformers 5 renamed the property."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name) or hasattr(model, name):
            return bool(getattr(model, name))
    return False


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit packed weights count at their unpacked size, ZeRO-3's
    partitioned ones (empty placeholders on each process) at their full size."""
    trainable = total = 0
    for p in model.parameters():
        n = int(getattr(p, "ds_numel", 0) or p.numel())
        if getattr(p, "quant_state", None) is not None or p.__class__.__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored byte
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
