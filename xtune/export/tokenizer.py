"""The tokenizer saved beside an exported model, carrying the recipe's chat template as jinja.

Training renders conversations with an xtune template (`xtune.templates`); a converted model has to chat
in that same format wherever it goes (transformers, vLLM, llama.cpp), so the template is exported to
its equivalent jinja and stored as the tokenizer's `chat_template` (transformers 5 writes it to
`chat_template.jinja`). `tokenizer.apply_chat_template` then reproduces the training text exactly.
A vision-language model's processor is saved the same way, its template behind the preamble that reads
the content lists processors are given (`xtune.templates.images.vision_jinja`).
"""

from __future__ import annotations

from pathlib import Path

from xtune.templates.export import attach_chat_template, export_jinja
from xtune.templates.images import vision_jinja


def save_tokenizer(tokenizer, out: str | Path, template_name: str | None = None, *, registry,
                   image_prompt: str = "") -> None:
    """Save `tokenizer` (or a processor) into `out` with `template_name`'s chat template from `registry`
    (when given).

    The padding side is reset to the left for generation, which is what chat and batched inference want;
    training's right padding is a property of the data collator, not of the released tokenizer.
    """
    text = getattr(tokenizer, "tokenizer", None)
    if text is not None and hasattr(tokenizer, "image_processor"):  # a processor
        if template_name:
            jinja = vision_jinja(export_jinja(template_name, registry=registry),
                                 image_prompt or tokenizer.image_token)
            tokenizer.chat_template = text.chat_template = jinja
    else:
        text = tokenizer
        attach_chat_template(tokenizer, template_name, registry=registry)
    previous = text.padding_side
    text.padding_side = "left"
    try:
        tokenizer.save_pretrained(str(out))
    finally:
        text.padding_side = previous
