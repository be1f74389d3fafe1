"""Full fine-tuning: every parameter trains."""

from __future__ import annotations

from xtune.methods.common import check_settings, train_all


def apply(model, settings: dict, adapter=None):
    check_settings("full", settings, ())
    return train_all(model)
