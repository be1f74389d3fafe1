"""Rendered segments -> `input_ids` + `labels`, exact at segment boundaries.

Tokenizing segments one by one and concatenating drifts from what the model sees at inference: BPE
and SentencePiece merge across the boundary ("\n" + "\nHi" is not "\n\nHi"), and SentencePiece adds a
word-start marker to every piece. So the whole rendered text is tokenized once, exactly as
`apply_chat_template(tokenize=True)` does (no extra special tokens: the template writes BOS itself),
and each token is labelled from the characters it covers (the tokenizer's offset mapping).

Rule for a token that straddles an ignored and a trained segment: it is trained when it covers at
least one trained character. This is the one place where exactness can be impossible: such a token
carries a little prompt text, so the decoded labels then start with that text (for example Qwen
tokenizes "assistant\\n" + "\\nHi" as "\\n\\n" + "Hi"; the label run decodes to "\\n\\nHi", one newline more
than the answer). Tests pin this deviation. Tokenizers without offsets (slow, Python-only) fall back
to re-tokenizing each boundary prefix, which finds the same split.
"""

from __future__ import annotations

from itertools import accumulate
from typing import Any

IGNORE_INDEX = -100


def _parts(segment: Any) -> tuple[str, bool]:
    if isinstance(segment, (tuple, list)):
        return str(segment[0]), bool(segment[1])
    return segment.text, bool(segment.train)


def _trained_chars(segments) -> tuple[str, list[int]]:
    """The full text and a running count of trained characters (prefix sums, length len(text)+1)."""
    texts, flags = [], []
    for segment in segments:
        text, train = _parts(segment)
        texts.append(text)
        flags.extend([1 if train else 0] * len(text))
    return "".join(texts), [0, *accumulate(flags)]


def _labels_from_offsets(ids, offsets, cum, length) -> list[int]:
    labels = []
    for token, (start, end) in zip(ids, offsets, strict=False):
        if end <= start:  # a token with no characters (e.g. an inserted word marker): use the next char
            start, end = min(start, max(length - 1, 0)), min(start, max(length - 1, 0)) + 1
        labels.append(token if cum[min(end, length)] - cum[min(start, length)] > 0 else IGNORE_INDEX)
    return labels


def _labels_by_prefixes(tokenizer, text, ids, segments) -> list[int]:
    """Fallback without offsets: a boundary's token index is where the prefix's tokens stop matching."""
    labels = [IGNORE_INDEX] * len(ids)
    pos = 0
    bounds = []
    for segment in segments:
        seg_text, train = _parts(segment)
        bounds.append((pos, pos + len(seg_text), train))
        pos += len(seg_text)

    def token_index(char_pos: int) -> int:
        if char_pos >= len(text):
            return len(ids)
        prefix = tokenizer(text[:char_pos], add_special_tokens=False)["input_ids"]
        n = 0
        while n < min(len(prefix), len(ids)) and prefix[n] == ids[n]:
            n += 1
        return n

    for start, end, train in bounds:
        if train and end > start:
            for i in range(token_index(start), token_index(end) if end < len(text) else len(ids)):
                labels[i] = ids[i]
    return labels


def encode_segments(segments, tokenizer) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of the concatenated segments; labels are -100 off the trained ones."""
    segments = list(segments)
    text, cum = _trained_chars(segments)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        labels = _labels_from_offsets(ids, enc["offset_mapping"], cum, len(text))
    else:
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        labels = _labels_by_prefixes(tokenizer, text, ids, segments)
    return ids, labels


def encode_pretrain(text: str, tokenizer) -> tuple[list[int], list[int]]:
    """Plain text for continued pretraining: the tokenizer's own BOS handling, EOS appended, all trained."""
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    return ids, list(ids)


def finish(ids: list[int], labels: list[int], max_length: int) -> tuple[list[int], list[int], bool] | None:
    """Truncate to `max_length`; None when nothing trained is left (the caller drops and counts it).

    The first label is always ignored: a causal LM never predicts its first token, and in a packed
    row that label would be predicted from the previous sample's last token.
    """
    truncated = len(ids) > max_length
    ids, labels = ids[:max_length], labels[:max_length]
    if labels:
        labels[0] = IGNORE_INDEX
    if not any(label != IGNORE_INDEX for label in labels):
        return None
    return ids, labels, truncated
