"""Where an answer ends: a template's stop words, the token ids that stop `generate`, and the cut of a
decoded answer at its first stop word.

`xtune chat` / `xtune serve` (through `ChatSession`) and `xtune eval` / a recipe's `evaluation_data`
(through `xtune.evaluate`) stop answers the same way; this layer sits below both, so neither copies it.
"""

from __future__ import annotations

from xtune.templates.render import get_template


def stop_words(template: str | None, tokenizer, *, registry) -> list[str]:
    """The template's stop words (none without a template) and the tokenizer's EOS text, once each."""
    words = []
    if template:
        words += list(get_template(template, registry).stop_words)
    if tokenizer.eos_token:
        words.append(tokenizer.eos_token)
    return list(dict.fromkeys(words))


def stop_token_ids(words: list[str], tokenizer, model) -> list[int]:
    """The ids `generate` stops at: the model's configured EOS ids, the tokenizer's, and every stop word
    that is a single token (a longer one is cut from the decoded text instead)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = (configured if isinstance(configured, list) else [configured]) + [tokenizer.eos_token_id]
    for word in words:
        encoded = tokenizer.encode(word, add_special_tokens=False)
        if len(encoded) == 1:
            ids.append(encoded[0])
    return [i for i in dict.fromkeys(ids) if i is not None]


def cut_at_stop(text: str, words) -> tuple[str, bool]:
    """(text before the first stop word, whether one was found)."""
    positions = [i for i in (text.find(w) for w in words if w) if i >= 0]
    if not positions:
        return text, False
    return text[: min(positions)], True
