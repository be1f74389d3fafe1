"""Freeze tuning: train only the last N decoder layers and/or the named modules (LLaMA-Factory's `freeze`)."""

from __future__ import annotations

import re

from xtune.errors import ConfigError
from xtune.methods.common import check_settings, freeze_all


def _layers(model, path: str):
    node = model
    for part in path.split("."):
        node = getattr(node, part, None)
        if node is None:
            raise ConfigError(f"method 'freeze': the model has no decoder layer list at {path!r}",
                              hint="set trainable_modules instead, or fix the model adapter's layers_path")
    return node


def apply(model, settings: dict, adapter=None):
    check_settings("freeze", settings, ("trainable_layers", "trainable_modules"))
    n_layers = int(settings.get("trainable_layers") or 0)
    patterns = list(settings.get("trainable_modules") or ())
    freeze_all(model)
    if n_layers:
        layers = _layers(model, adapter.layers_path if adapter is not None else "model.layers")
        if n_layers > len(layers):
            raise ConfigError(
                f"method 'freeze': trainable_layers={n_layers} but the model has {len(layers)} layers")
        for layer in list(layers)[-n_layers:]:
            for p in layer.parameters():
                p.requires_grad_(True)
    for pattern in patterns:
        regex = re.compile(pattern)
        matched = [p for name, p in model.named_parameters() if regex.search(name)]
        if not matched:
            names = sorted({n.rsplit(".", 1)[0] for n, _ in model.named_parameters()})[:8]
            raise ConfigError(f"method 'freeze': trainable_modules pattern {pattern!r} matches no parameter",
                              hint=f"module names look like {', '.join(names)}")
        for p in matched:
            p.requires_grad_(True)
    return model
