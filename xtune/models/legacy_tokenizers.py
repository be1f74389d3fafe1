"""Fast tokenizers for the legacy families, built from their SentencePiece `tokenizer.model`.

Their hub folders carry a SentencePiece model and a tokenizer class of their own (`InternLM2Tokenizer`,
`BaichuanTokenizer`, `ChatGLMTokenizer` ...) but no tokenizer.json, so without the hub code transformers
cannot load them. The model file says everything the hub classes do with it: the pieces and their scores
(BPE merges follow the scores), byte fallback, whether a space is put before the text
(`add_dummy_prefix`) and the normalisation; the tokenizer_config.json says which special tokens surround
a sequence and which strings are added tokens. tests/test_legacy_tokenizers.py checks the result against
the hub tokenizers' own ids (computed under transformers 4.x) on the tiny fixtures and on InternLM's real
vocabulary.
"""

from __future__ import annotations

import json
from pathlib import Path

from xtune.errors import ConfigError

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
# ChatGLM's tokenizer appends these after the SentencePiece vocabulary (tokenization_chatglm.SPTokenizer).
CHATGLM_SPECIALS = ("[MASK]", "[gMASK]", "[sMASK]", "sop", "eop", "<|system|>", "<|user|>", "<|assistant|>",
                    "<|observation|>")


def _proto(path: Path):
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as exc:
        raise ConfigError("reading a SentencePiece tokenizer.model needs the sentencepiece package",
                          hint="pip install sentencepiece protobuf") from exc
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{str(path)!r} is not a SentencePiece model: {exc}") from None
    return proto


def _backend(proto, path: Path, renamed: dict[int, str] | None = None):
    """A `tokenizers` BPE equal to the SentencePiece model: same ids, merges in score order, byte fallback,
    the dummy prefix and whitespace handling of its normaliser. `renamed` gives pieces another text (the
    tokenizer_config's added tokens that reuse reserved pieces: InternLM2's `<|im_start|>` is the model's
    `[UNUSED_TOKEN_146]`)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers
    from transformers.tokenization_utils_base import generate_merges

    if proto.trainer_spec.model_type != 2:  # 1 unigram, 2 bpe
        raise ConfigError(f"{str(path)!r} is a SentencePiece model of type {proto.trainer_spec.model_type}; "
                          "only BPE models (every legacy family's) are converted")
    norm = proto.normalizer_spec
    if norm.name not in ("identity", ""):
        raise ConfigError(f"{str(path)!r} normalises text with {norm.name!r}, which is not converted")
    pieces = [(renamed or {}).get(i, p.piece) for i, p in enumerate(proto.pieces)]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    scores = {piece: p.score for piece, p in zip(pieces, proto.pieces, strict=True) if p.type == NORMAL}
    skip = {piece for piece, p in zip(pieces, proto.pieces, strict=True) if p.type != NORMAL}
    merges = generate_merges(vocab, scores, skip_tokens=skip)
    unk = pieces[proto.trainer_spec.unk_id]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=unk, fuse_unk=True,
                               byte_fallback=proto.trainer_spec.byte_fallback))
    steps = []
    if norm.remove_extra_whitespaces:
        steps += [normalizers.Strip(left=True, right=True), normalizers.Replace(Regex(" {2,}"), " ")]
    if norm.add_dummy_prefix:
        steps.append(normalizers.Prepend("▁"))
    steps.append(normalizers.Replace(" ", "▁"))
    tok.normalizer = normalizers.Sequence(steps)
    dec = [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if norm.add_dummy_prefix:
        dec.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(dec)
    return tok


def _token_text(value) -> str | None:
    if isinstance(value, dict):
        return value.get("content")
    return value


def _renamed(proto, config: dict) -> dict[int, str]:
    """Added tokens of the config whose id is a piece of the model with another text."""
    out = {}
    for key, spec in (config.get("added_tokens_decoder") or {}).items():
        i = int(key)
        if i < len(proto.pieces) and proto.pieces[i].piece != spec["content"]:
            out[i] = spec["content"]
    return out


def _added_tokens(proto, config: dict, extra: tuple[str, ...] = (), *, controls: bool = True):
    """(AddedToken list): the model's user-defined (and, with `controls`, control) pieces, the config's
    added tokens, and `extra` strings, each matched whole in text."""
    from tokenizers import AddedToken

    renamed = _renamed(proto, config)
    kinds = (CONTROL, USER_DEFINED, UNKNOWN) if controls else (USER_DEFINED,)
    out: dict[str, AddedToken] = {}
    for i, piece in enumerate(proto.pieces):
        if piece.type in kinds:
            text = renamed.get(i, piece.piece)
            out[text] = AddedToken(text, special=piece.type != USER_DEFINED, normalized=False)
    for spec in (config.get("added_tokens_decoder") or {}).values():
        content = spec["content"]
        out[content] = AddedToken(content, special=bool(spec.get("special", True)), normalized=False,
                                  lstrip=bool(spec.get("lstrip")), rstrip=bool(spec.get("rstrip")))
    for text in extra:
        out.setdefault(text, AddedToken(text, special=True, normalized=False))
    return list(out.values())


def _wrap(tok, config: dict, *, bos: str | None, eos: str | None, unk: str, pad: str | None,
          prefix: tuple[str, ...] = ()):
    """PreTrainedTokenizerFast with the config's special tokens, sequence template and chat template."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    first = list(prefix) or ([bos] if bos and config.get("add_bos_token", False) else [])
    last = [eos] if eos and config.get("add_eos_token", False) else []
    if first or last:
        single = " ".join([*first, "$A", *last])
        pair = " ".join([*first, "$A", *last, *first, "$B:1", *last])
        specials = [(t, tok.token_to_id(t)) for t in dict.fromkeys(first + last)]
        tok.post_processor = processors.TemplateProcessing(single=single, pair=pair, special_tokens=specials)
    keep = {k: config[k] for k in ("model_max_length", "padding_side", "clean_up_tokenization_spaces",
                                   "chat_template") if config.get(k) is not None}
    keep.setdefault("clean_up_tokenization_spaces", False)
    extra = [t for t in (config.get("additional_special_tokens") or []) if isinstance(t, str)]
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos, unk_token=unk,
                                   pad_token=pad, **keep)
    if extra:
        fast.add_special_tokens({"additional_special_tokens": extra})
    return fast


def sentencepiece(folder: Path, config: dict):
    """InternLM, InternLM2, Baichuan and Baichuan2: a Llama-style SentencePiece tokenizer whose BOS / EOS
    are added as their tokenizer_config.json says (`add_bos_token`, `add_eos_token`)."""
    path = Path(folder) / "tokenizer.model"
    proto = _proto(path)
    tok = _backend(proto, path, _renamed(proto, config))
    tok.add_tokens(_added_tokens(proto, config))
    _check_ids(tok, config, path)
    spec = proto.trainer_spec

    def piece(i, key):
        name = _token_text(config.get(key))
        return name if name else (proto.pieces[i].piece if 0 <= i < len(proto.pieces) else None)

    config = {"add_bos_token": True, **config}
    return _wrap(tok, config, bos=piece(spec.bos_id, "bos_token"), eos=piece(spec.eos_id, "eos_token"),
                 unk=piece(spec.unk_id, "unk_token"), pad=_token_text(config.get("pad_token")))


def chatglm(folder: Path, config: dict):
    """ChatGLM2 / 3: the SentencePiece vocabulary plus its nine special tokens appended after it, every
    sequence opened by `[gMASK]` `sop`; padding with `<unk>` on the left, as its tokenizer does. The special
    tokens are matched whole in text, as the official chat template (`[gMASK]sop<|user|>...`) needs."""
    path = Path(folder) / "tokenizer.model"
    proto = _proto(path)
    tok = _backend(proto, path)
    tok.add_tokens(_added_tokens(proto, {}, controls=False))
    from tokenizers import AddedToken

    size = len(proto.pieces)
    if tok.get_vocab_size(with_added_tokens=False) != size:
        raise ConfigError(f"{str(path)!r}: unexpected vocabulary size")
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in CHATGLM_SPECIALS])
    ids = [tok.token_to_id(t) for t in CHATGLM_SPECIALS]
    if ids != list(range(size, size + len(CHATGLM_SPECIALS))):
        raise ConfigError(f"{str(path)!r}: ChatGLM's special tokens did not land after the vocabulary "
                          f"({ids})")
    config = {"padding_side": "left", **config}
    spec = proto.trainer_spec
    return _wrap(tok, config, bos=proto.pieces[spec.bos_id].piece, eos=proto.pieces[spec.eos_id].piece,
                 unk=proto.pieces[spec.unk_id].piece, pad=proto.pieces[spec.unk_id].piece,
                 prefix=("[gMASK]", "sop"))


def _check_ids(tok, config: dict, path: Path) -> None:
    """Every added token of the config has the id the config gives it."""
    wrong = [(spec["content"], int(key), tok.token_to_id(spec["content"]))
             for key, spec in (config.get("added_tokens_decoder") or {}).items()
             if tok.token_to_id(spec["content"]) != int(key)]
    if wrong:
        text, want, got = wrong[0]
        raise ConfigError(f"{str(path.parent)!r}: tokenizer_config.json gives {text!r} the id {want}, the "
                          f"SentencePiece model leads to {got}")


def tokenizer_config(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
