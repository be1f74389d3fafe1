"""Full fine-tuning: every parameter trains."""

from __future__ import annotations

from xtune.methods.common import check_settings


def apply(model, settings: dict, adapter=None):
    check_settings("full", settings, ())
    for p in model.parameters():
        p.requires_grad_(True)
    return model
