"""Tokens and labels on the six real tokenizers in shared/: exact ids, exact label spans, stop tokens.

For each tokenizer and its template, over conversations built to hit the hard cases (system or none,
several turns, Chinese, padded whitespace, an answer starting with a newline):
- input_ids equal the tokenizer's ids for the whole rendered text, and `apply_chat_template` with the
  model's official jinja (so there is no drift at segment boundaries);
- each run of labelled tokens decodes to exactly one assistant answer plus its end-of-turn token,
  except for the one documented deviation (a token straddling prompt and answer, see xtune.data.tokenize).
"""

from __future__ import annotations

import json

import pytest
from conftest import shared_path

from xtune.data.tokenize import IGNORE_INDEX, encode_many, encode_segments, finish
from xtune.plugins import get_registry
from xtune.templates import render_segments

CONVERSATIONS = [[{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there!"}],
                 [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "你好"},
                  {"role": "assistant", "content": "你好！很高兴认识你。"},
                  {"role": "user", "content": "How are you?"},
                  {"role": "assistant", "content": "I'm doing well, thank you!"}],
                 [{"role": "user", "content": "  padded  "},
                  {"role": "assistant", "content": "   I am an assistant   "},
                  {"role": "user", "content": "Another question"},
                  {"role": "assistant", "content": "Sure: 1 + 1 = 2."}],
                 [{"role": "user", "content": "x"},
                  {"role": "assistant", "content": "\nstarts with a newline\n"}],
                 [{"role": "user", "content": "code?"},
                  {"role": "assistant", "content": "```py\nprint('hi')\n```"}]]


def _tokenizer(kind: str):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if kind == "llama2":  # the real Llama-2 SentencePiece vocabulary, converted to tokenizer.json
        return AutoTokenizer.from_pretrained(
            shared_path("reference", "models", "llama2_tiny_random", "hf_converted_DERIVED"))
    if kind in ("internlm2", "chatglm3"):  # remote-code tokenizers: use the derived tokenizer.json
        folder = shared_path("reference", "tokenizers", f"hf_{kind}")
        return PreTrainedTokenizerFast(
            tokenizer_file=str(folder / "tokenizer.with_special_tokens.DERIVED.json"), bos_token="<s>",
                                       eos_token="</s>", unk_token="<unk>")
    name = {"llama3_1": "hf_llama3_1", "qwen2_5": "hf_qwen2_5",
            "mistral": "hf_mistral7b_v0.1_labelled_llama2_by_lenml"}[kind]
    return AutoTokenizer.from_pretrained(shared_path("reference", "tokenizers", name))


def _official_jinja(template_name: str) -> str:
    """The reference jinja that the template declares it matches (its `reference` in shared/)."""
    from xtune.plugins import get_registry

    reference = get_registry().chat_templates.get(template_name).reference
    path = shared_path("reference", "chat_templates", reference)
    if reference.endswith(".json"):
        return json.loads(path.read_text(encoding="utf-8"))["chat_template"]
    source = path.read_text(encoding="utf-8")
    if reference.startswith("community_chujiezheng/"):  # installed as that collection says: no indentation
        source = source.replace("    ", "").replace("\n", "")
    return source


# tokenizer -> (template, the end-of-turn token every trained run must end with; None: the template has none)
CASES = {
    "llama2": ("llama2_chat", "</s>"),
    "llama3_1": ("llama3_1_chat", "<|eot_id|>"),
    "qwen2_5": ("qwen2_5_chat", "<|im_end|>"),
    "mistral": ("mistral", "</s>"),
    "internlm2": ("internlm2_chat", "<|im_end|>"),
    # ChatGLM3's official template ends an answer with nothing: the next "<|user|>" is the stop word,
    # so no stop token can be labelled inside the answer's own span.
    "chatglm3": ("chatglm3", None),
}


# The two deviations xtune.data.tokenize documents, exactly; every other run must decode to its answer.
DEVIATIONS = {
    # An answer starting with "\n" after the prompt's "\n": one "\n\n" token straddles both and is trained.
    "qwen2_5": lambda want: "\n" + want if want.startswith("\n") else None,
    "internlm2": lambda want: "\n" + want if want.startswith("\n") else None,
    # The normalizer prepends a word marker to every text chunk after a special token ("<|assistant|>"):
    # that marker token has no characters of its own and goes with the answer that follows it.
    "chatglm3": lambda want: " " + want,
}
for _kind in CASES:
    DEVIATIONS.setdefault(_kind, lambda want: None)


@pytest.fixture(scope="module", params=list(CASES))
def case(request):
    kind = request.param
    tokenizer = _tokenizer(kind)
    tokenizer.chat_template = _official_jinja(CASES[kind][0])
    return kind, tokenizer, *CASES[kind]


def _runs(labels):
    runs, start = [], None
    for i, label in enumerate(labels + [IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = i
        elif label == IGNORE_INDEX and start is not None:
            runs.append((start, i))
            start = None
    return runs


def _trained_texts(segments):
    texts, current = [], None
    for segment in segments:
        if segment.train:
            current = (current or "") + segment.text
        elif current is not None:
            texts.append(current)
            current = None
    return texts + ([current] if current is not None else [])


def _decode_span(tokenizer, ids, start, end):
    """The text of ids[start:end] in context: decode of the prefix up to `end` minus the prefix up to `start`
    (decoding a span alone would let SentencePiece drop its leading space)."""

    def dec(part):
        return tokenizer.decode(part, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    before, upto = dec(ids[:start]), dec(ids[:end])
    assert upto.startswith(before)
    return upto[len(before) :]


@pytest.mark.parametrize("conversation", CONVERSATIONS, ids=[f"conv{i}" for i in range(len(CONVERSATIONS))])
def test_ids_match_official_template_and_labels_decode_to_answers(case, conversation):
    kind, tokenizer, template, stop = case
    if kind == "mistral" and conversation[0]["role"] == "system":
        conversation = conversation[1:]  # the official Mistral template refuses a system turn
    segments = render_segments(template, conversation, registry=get_registry())
    ids, labels = encode_segments(segments, tokenizer)
    text = "".join(s.text for s in segments)
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    official = tokenizer.apply_chat_template(conversation, tokenize=True, return_dict=True)["input_ids"]
    assert ids == list(official)

    expected = _trained_texts(segments)
    runs = _runs(labels)
    assert len(runs) == len(expected) == sum(m["role"] == "assistant" for m in conversation)
    for (start, end), want in zip(runs, expected, strict=True):
        got = _decode_span(tokenizer, ids, start, end)
        if got != want:
            assert got == DEVIATIONS[kind](want), (kind, got, want)
        if stop is not None:
            assert ids[end - 1] == tokenizer.convert_tokens_to_ids(stop)
            assert got.endswith(stop)


def test_straddling_token_rule_is_pinned():
    """Qwen merges "assistant\\n" + "\\nanswer" into "\\n\\n": that one token is trained (it carries answer
    text)."""
    tokenizer = _tokenizer("qwen2_5")
    ids, labels = encode_segments([("<|im_start|>assistant\n", False), ("\nHi<|im_end|>", True)], tokenizer)
    newline2 = tokenizer.convert_tokens_to_ids("ĊĊ")
    assert newline2 in ids and labels[ids.index(newline2)] == newline2
    # An answer that does not start with whitespace keeps the prompt's newline untrained.
    ids, labels = encode_segments([("<|im_start|>assistant\n", False), ("Hi<|im_end|>", True)], tokenizer)
    assert [tokenizer.decode([i]) for i,
            lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX] == ["Hi", "<|im_end|>"]


class _NoOffsets:
    """A tokenizer without offset mappings (like slow, Python-only ones), wrapping a fast one."""

    is_fast = False

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": self.inner(text, add_special_tokens=add_special_tokens)["input_ids"]}


@pytest.mark.parametrize("kind", ["llama2", "qwen2_5"])
def test_prefix_fallback_labels_like_offsets(kind):
    tokenizer = _tokenizer(kind)
    template = CASES[kind][0]
    segment_lists = [render_segments(template, c, registry=get_registry()) for c in CONVERSATIONS]
    assert encode_many(segment_lists, _NoOffsets(tokenizer)) == encode_many(segment_lists, tokenizer)


def test_finish_truncates_and_drops_samples_without_trained_tokens():
    ids = list(range(10, 20))
    labels = [IGNORE_INDEX] * 6 + ids[6:]
    assert finish(ids, labels, 20) == (ids, labels, False)
    ids7, labels7, truncated = finish(ids, labels, 7)
    assert (ids7, labels7, truncated) == (ids[:7], labels[:7], True)
    assert finish(ids, labels, 6) is None  # the answer was cut away entirely
    # The first label is never trained: nothing predicts the first token.
    assert finish([1, 2], [1, 2], 8) == ([1, 2], [IGNORE_INDEX, 2], False)
