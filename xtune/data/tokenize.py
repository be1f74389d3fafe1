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
than the answer). A token with no characters of its own (ChatGLM3's normalizer prepends a word
marker to each text chunk after a special token) takes the flag of the character after it, so the
labels of a ChatGLM3 answer decode with one leading space more. Tests pin both deviations. Tokenizers
without offsets (slow, Python-only) fall back to re-tokenizing each boundary prefix, which finds the same
split.
"""

from __future__ import annotations

from typing import Any

import numpy as np

IGNORE_INDEX = -100


def _parts(segment: Any) -> tuple[str, bool]:
    if isinstance(segment, (tuple, list)):
        return str(segment[0]), bool(segment[1])
    return segment.text, bool(segment.train)


def _trained_chars(segments) -> tuple[str, np.ndarray]:
    """The full text and a running count of trained characters (prefix sums, length len(text)+1)."""
    texts, flags = [], [np.zeros(1, dtype=np.int64)]
    for segment in segments:
        text, train = _parts(segment)
        texts.append(text)
        flags.append(np.full(len(text), 1 if train else 0, dtype=np.int64))
    return "".join(texts), np.cumsum(np.concatenate(flags))


def _labels_from_offsets(ids, offsets, cum: np.ndarray) -> list[int]:
    length = len(cum) - 1
    if not ids:
        return []
    spans = np.asarray(offsets, dtype=np.int64).reshape(-1, 2).clip(0, length)
    start, end = spans[:, 0], spans[:, 1]
    # A token that covers no characters (e.g. an inserted word marker) takes the next character's flag.
    empty = end <= start
    start = np.where(empty, np.minimum(start, max(length - 1, 0)), start)
    end = np.where(empty, start + 1, end).clip(0, length)
    trained = cum[end] - cum[start] > 0
    return np.where(trained, np.asarray(ids, dtype=np.int64), IGNORE_INDEX).tolist()


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
    return encode_many([segments], tokenizer)[0]


def encode_many(conversations, tokenizer) -> list[tuple[list[int], list[int]]]:
    """encode_segments for many segment lists, tokenized in one batch call (the fast path)."""
    if not conversations:
        return []
    prepared = [_trained_chars(list(segments)) for segments in conversations]
    texts = [text for text, _ in prepared]
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
        return [(list(ids), _labels_from_offsets(ids, offsets, cum)) for ids, offsets,
                (_, cum) in zip(enc["input_ids"], enc["offset_mapping"], prepared, strict=True)]
    out = []
    for segments, text in zip(conversations, texts, strict=True):
        ids = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        out.append((ids, _labels_by_prefixes(tokenizer, text, ids, list(segments))))
    return out


def encode_pretrain(text: str, tokenizer) -> tuple[list[int], list[int]]:
    """Plain text for continued pretraining: the tokenizer's own BOS handling, EOS appended, all trained."""
    ids = list(tokenizer(text, add_special_tokens=True)["input_ids"])
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    return ids, list(ids)


# No token of the tokenizers xtune meets covers more characters than this (the longest are runs of spaces
# in code vocabularies), so text past (max_length + 1) x this can never be part of a kept token.
MAX_CHARS_PER_TOKEN = 256


def clip_segments(segments: list[dict], max_length: int) -> list[dict]:
    """Drop the text that truncation to `max_length` tokens would drop anyway, before tokenizing it: a
    50 MB record then costs what its first tokens cost, not minutes and gigabytes."""
    budget = (max_length + 1) * MAX_CHARS_PER_TOKEN
    out = []
    for segment in segments:
        if budget <= 0:
            break
        text = segment["text"][:budget]
        budget -= len(text)
        out.append(dict(segment, text=text) if len(text) < len(segment["text"]) else segment)
    return out


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
