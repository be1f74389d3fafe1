"""The tokenizer saved beside an exported model, carrying the recipe's chat template as jinja.

Training renders conversations with an xtune template (`xtune.templates`); a converted model has to chat
in that same format wherever it goes (transformers, vLLM, llama.cpp), so the template is exported to
its equivalent jinja and stored as the tokenizer's `chat_template` (transformers 5 writes it to
`chat_template.jinja`). `tokenizer.apply_chat_template` then reproduces the training text exactly.
"""

from __future__ import annotations

from pathlib import Path


def attach_chat_template(tokenizer, template_name: str | None) -> str | None:
    """Set the exported jinja of `template_name` on `tokenizer`; returns the jinja (None: left as it was)."""
    if not template_name:
        return None
    from xtune.templates.export import export_jinja

    jinja = export_jinja(template_name)
    tokenizer.chat_template = jinja
    return jinja


def save_tokenizer(tokenizer, out: str | Path, template_name: str | None = None) -> None:
    """Save `tokenizer` into `out` with `template_name`'s chat template (when given).

    The padding side is reset to the left for generation, which is what chat and batched inference want;
    training's right padding is a property of the data collator, not of the released tokenizer.
    """
    attach_chat_template(tokenizer, template_name)
    previous = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        tokenizer.save_pretrained(str(out))
    finally:
        tokenizer.padding_side = previous


def find_template_name(chat_template: str | None) -> str | None:
    """The registered xtune template whose exported jinja is exactly `chat_template`, else None.

    Folders written by `xtune convert` carry such jinja; recognising it gives chat the template's stop words.
    """
    if not chat_template:
        return None
    from xtune.plugins import get_registry
    from xtune.templates.export import export_jinja

    first_line = chat_template.split("\n", 1)[0]
    for entry in get_registry().chat_templates:
        if repr(entry.name) in first_line and export_jinja(entry) == chat_template:
            return entry.name
    return None
