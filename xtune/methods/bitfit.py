"""BitFit: only the bias terms train (Ben Zaken et al., 2022). Families without biases (Llama) cannot use
it."""

from __future__ import annotations

from xtune.errors import ConfigError
from xtune.methods.common import check_settings, freeze_all


def apply(model, settings: dict, adapter=None):
    check_settings("bitfit", settings, ())
    freeze_all(model)
    biases = [p for name, p in model.named_parameters() if name.endswith(".bias") or name == "bias"]
    if not biases:
        raise ConfigError(
            f"method 'bitfit' trains bias terms, and this {model.config.model_type} model has none",
                          hint="choose lora or ia3 for this family")
    for p in biases:
        p.requires_grad_(True)
    return model
