"""What a vision-language run exports, beside what a text run does.

A Hugging Face VLM trained with an adapter is exported as that adapter (plus its projector, trained as a
module of its own), to be loaded on top of the hub model. A composed LLaVA has no base anywhere but in
the run, so it is saved whole as a `LlavaForConditionalGeneration`, an adapter merged into its weights:
plain transformers loads it. Either way the processor goes beside it, carrying the recipe's template in
a form that also reads content lists (`xtune.templates.images.vision_jinja`).
"""

from __future__ import annotations


def is_composed(cfg) -> bool:
    """A LLaVA composed from a vision encoder and a language model (`vlm.vision_model`)."""
    return bool((cfg.get("vlm") or {}).get("vision_model"))


def is_quantized(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return bool(getattr(base, "is_loaded_in_4bit", False) or getattr(base, "is_loaded_in_8bit", False))


def vlm_info(info: dict, cfg) -> dict:
    """The export record of a vision-language run: its modality and, for a composition, both parts."""
    vlm = dict(cfg.get("vlm") or {})
    info = dict(info, modality="vision-language")
    if vlm.get("vision_model"):
        info.update(language_model=info.get("base_model"), vision_model=str(vlm["vision_model"]),
                    base_model=f"{info.get('base_model')} + {vlm['vision_model']} (LLaVA)", kind="full model")
    return info


def prepare(model, cfg, uses_peft: bool):
    """(model to save, saved as an adapter?): a composed LLaVA's adapter is merged into it."""
    if is_composed(cfg) and uses_peft:
        return model.merge_and_unload(), False
    return model, uses_peft
