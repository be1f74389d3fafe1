"""The tokenizer inside a GGUF file: tokens, their kinds, merges, special ids and the chat template.

llama.cpp knows two tokenizer kinds that cover the families xtune writes: "llama" (SentencePiece-style BPE
with byte fallback: Llama 2, Mistral, Yi, Gemma, Phi-3) and "gpt2" (byte-level BPE: Llama 3, Qwen,
SmolLM2). Both are read from the `tokenizer.json` a transformers tokenizer saves, so a fine-tune's
tokenizer (added tokens, its chat template) is what goes into the file.

gguf's `SpecialVocab` supplies the merges, the special token ids, add-BOS/EOS and the chat template. Its
vocabulary classes are not used for the tokens themselves: `BpeVocab` marks special tokens that sit inside
the base vocabulary (SmolLM2's `<|im_start|>`) as plain text, which llama.cpp would then split, and
`LlamaHfVocab` gives every token the same score, while llama.cpp's SentencePiece tokenizer merges the
best-scored pair first. Here a token scores minus the rank of the first merge that makes it, so that
llama.cpp merges in the tokenizer's own order.

A byte-level vocabulary also needs llama.cpp's name for its pre-tokenizer (how text is split before the
merges). It is recognised from the pre-tokenizer in `tokenizer.json`; one xtune cannot name is refused,
because a wrong name silently changes how llama.cpp tokenizes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from xtune.errors import UsageError

# Split patterns of the byte-level tokenizers llama.cpp knows by name (from the tokenizer.json files).
_LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_SPLIT_NAMES = {_LLAMA3_SPLIT: "llama-bpe", _QWEN2_SPLIT: "qwen2"}
_BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")


def tokenizer_kind(tokenizer_json: dict) -> str:
    """"llama" or "gpt2" (llama.cpp's names), or a UsageError for a tokenizer of another kind."""
    model = tokenizer_json.get("model", {})
    decoder = (tokenizer_json.get("decoder") or {}).get("type")
    if model.get("type") == "BPE" and model.get("byte_fallback"):
        return "llama"
    if model.get("type") == "BPE" and decoder == "ByteLevel":
        return "gpt2"
    raise UsageError(f"tokenizer of type {model.get('type')!r} (decoder {decoder!r}) cannot be written as "
                     "GGUF by xtune",
                     hint="supported: SentencePiece-style BPE with byte fallback, byte-level BPE")


def pre_tokenizer_name(tokenizer_json: dict) -> str:
    """llama.cpp's name for how a byte-level tokenizer splits text before merging."""
    pre = tokenizer_json.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if (kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits")
            and steps[1].get("use_regex", True)):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        name = _SPLIT_NAMES.get((steps[0].get("pattern") or {}).get("Regex"))
        if name:
            return name
    raise UsageError(f"the tokenizer's pre-tokenizer ({' + '.join(map(str, kinds))}) is not one xtune can "
                     "name for llama.cpp",
                     hint="known: gpt-2, smollm, llama-bpe (Llama 3), qwen2; for others use "
                                       "llama.cpp's convert_hf_to_gguf.py")


def adds_space_prefix(tokenizer_json: dict) -> bool:
    """Whether a SentencePiece-style tokenizer puts "▁" before the text (Llama 2 does, Gemma does not)."""
    def visit(node) -> bool:
        if isinstance(node, dict):
            if node.get("type") == "Prepend" and node.get("prepend") == "\u2581":
                return True
            if node.get("type") == "Metaspace":
                default = "always" if node.get("add_prefix_space", True) else "never"  # older files
                return node.get("prepend_scheme", default) != "never"
            return any(visit(v) for v in node.values())
        if isinstance(node, list):
            return any(visit(v) for v in node)
        return False

    return visit(tokenizer_json.get("normalizer")) or visit(tokenizer_json.get("pre_tokenizer"))


def token_table(tokenizer_json: dict, n_vocab: int, kind: str, unk_token: str | None = None):
    """(tokens, token types) for ids 0..n_vocab-1. Ids the tokenizer does not use (embedding rows padded
    beyond the vocabulary, as Qwen's are) become `[PAD{id}]` of type UNUSED, as llama.cpp writes them."""
    import gguf

    by_id = {i: t for t, i in tokenizer_json["model"]["vocab"].items()}
    added = {a["id"]: a for a in tokenizer_json.get("added_tokens", [])}
    by_id.update({i: a["content"] for i, a in added.items()})
    if max(by_id) >= n_vocab:
        raise UsageError(f"the tokenizer has ids up to {max(by_id)} but the model's embedding only {n_vocab} "
                         "rows",
                         hint="resize the model's embeddings to the tokenizer before exporting")
    unk = unk_token or tokenizer_json["model"].get("unk_token")
    tokens, types = [], []
    for i in range(n_vocab):
        token = by_id.get(i)
        tokens.append(token if token is not None else f"[PAD{i}]")
        if token is None:
            types.append(gguf.TokenType.UNUSED)
        elif kind == "llama" and token == unk:
            types.append(gguf.TokenType.UNKNOWN)
        elif i in added:
            types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
        elif kind == "llama" and _BYTE_TOKEN.fullmatch(token):
            types.append(gguf.TokenType.BYTE)
        else:
            types.append(gguf.TokenType.NORMAL)
    return tokens, types


def merge_scores(tokenizer_json: dict, tokens: list[str]) -> list[float]:
    """Minus the rank of the first merge that makes each token; tokens no merge makes rank below all."""
    first: dict[str, int] = {}
    for rank, merge in enumerate(tokenizer_json["model"].get("merges") or []):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        first.setdefault(left + right, rank)
    floor = -float(len(first) + 1)
    return [-float(first[t]) if t in first else floor for t in tokens]


def add_tokenizer(writer, folder: Path, tokenizer, n_vocab: int) -> str:
    """Write the tokenizer saved in `folder` (tokenizer.json, tokenizer_config.json, chat template and the
    model's config.json for fallback special ids) into `writer`; returns the tokenizer kind."""
    import gguf

    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        raise UsageError("the tokenizer has no tokenizer.json (a fast tokenizer is needed for GGUF export)")
    tokenizer_json = json.loads(path.read_text(encoding="utf-8"))
    kind = tokenizer_kind(tokenizer_json)
    tokens, types = token_table(tokenizer_json, n_vocab, kind, tokenizer.unk_token)
    writer.add_tokenizer_model(kind)
    writer.add_tokenizer_pre("default" if kind == "llama" else pre_tokenizer_name(tokenizer_json))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if kind == "llama":
        writer.add_token_scores(merge_scores(tokenizer_json, tokens))
        writer.add_add_space_prefix(adds_space_prefix(tokenizer_json))
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=n_vocab)
    special.add_special_token.update(_added_specials(tokenizer))
    special.add_to_gguf(writer, quiet=True)
    return kind


def _added_specials(tokenizer) -> dict[str, bool]:
    """Whether encoding adds BOS / EOS, as observed on the tokenizer itself (a tokenizer_config need not
    say, and llama.cpp's default differs by tokenizer kind)."""
    ids = tokenizer("a")["input_ids"]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    return {"bos": bos is not None and ids[:1] == [bos],
            "eos": eos is not None and len(ids) > 1 and ids[-1:] == [eos]}
