"""Choosing how to talk to a loaded model: which xtune template its family uses by default.

Loading itself is the model builder's (`xtune.models.build.load_for_inference`): a folder, a hub id,
`modelscope://ID` or a GGUF file, optionally in 4/8-bit and with a PEFT adapter on top.
"""

from __future__ import annotations


def default_template_name(model, name_or_path: str, registry) -> str | None:
    """The model adapter's default template for this model (by `config.model_type`); where several families
    share a model_type (llama), the one whose name appears in the model's name wins."""
    from xtune.models.legacy import source_model_type

    config = getattr(model, "config", None)
    model_type = source_model_type(model) or getattr(config, "model_type", None)
    if model_type is None:
        return None
    candidates = [a for a in registry.model_adapters if model_type in a.model_types]
    if not candidates:
        return None
    label = (str(name_or_path) + " " + str(getattr(config, "_name_or_path", ""))).lower()
    label = label.replace("-", "").replace("_", "").replace(".", "")
    named = [a for a in candidates if a.name.lower().replace("_", "") in label]
    best = max(named, key=lambda a: len(a.name)) if named else candidates[0]
    return best.default_template
