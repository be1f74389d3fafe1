"""The tokenizer saved beside an exported model, carrying the recipe's chat template as jinja.

Training renders conversations with an xtune template (`xtune.templates`); a converted model has to chat
in that same format wherever it goes (transformers, vLLM, llama.cpp), so the template is exported to
its equivalent jinja and stored as the tokenizer's `chat_template` (transformers 5 writes it to
`chat_template.jinja`). `tokenizer.apply_chat_template` then reproduces the training text exactly.
"""

from __future__ import annotations

from pathlib import Path

from xtune.templates.export import attach_chat_template


def save_tokenizer(tokenizer, out: str | Path, template_name: str | None = None, registry=None) -> None:
    """Save `tokenizer` into `out` with `template_name`'s chat template (when given).

    The padding side is reset to the left for generation, which is what chat and batched inference want;
    training's right padding is a property of the data collator, not of the released tokenizer.
    """
    attach_chat_template(tokenizer, template_name, registry)
    previous = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        tokenizer.save_pretrained(str(out))
    finally:
        tokenizer.padding_side = previous
