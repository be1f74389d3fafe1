"""One template path: training data, `xtune chat`, the sample chats during training and the exported jinja
produce the same tokens (BOS / EOS included) for every built-in template, with tokenizers whose special
tokens differ from the template's own reference tokens (the case that once went wrong for generic
templates), and with one that has no BOS at all."""

from __future__ import annotations

import pytest
from test_engine_fixtures import make_tokenizer

from xtune.errors import UsageError
from xtune.plugins import PluginSystem

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def registry():
    system = PluginSystem()
    system.load_defaults()
    return system.registry


@pytest.fixture(scope="module", params=["bpe_with_bos", "qwen2_5_without_bos"])
def tokenizer(request, tmp_path_factory):
    if request.param == "bpe_with_bos":
        return make_tokenizer(tmp_path_factory.mktemp("tok"))
    from conftest import shared_path
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(shared_path("reference", "tokenizers", "hf_qwen2_5")))
    assert tok.bos_token is None
    return tok


def conversations(template, registry):
    """(prompt messages, the same with the answer) for `template`; without a system message when the
    template refuses one."""
    from xtune.templates import render_text

    system = [{"role": "system", "content": "Be brief."}]
    turns = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
             {"role": "user", "content": "And another?"}]
    try:
        render_text(template, system + turns, True, registry=registry)
    except UsageError:
        system = []
    prompt = system + turns
    return prompt, prompt + [{"role": "assistant", "content": "Green."}]


class _NoModel:
    generation_config = None


def test_every_path_renders_the_same_tokens(registry, tokenizer):
    from xtune.chat.session import ChatSession
    from xtune.data.pipeline import render_conversations
    from xtune.data.tokenize import encode_segments
    from xtune.engine.samples import SampleChats
    from xtune.templates.export import export_jinja

    checked = 0
    for entry in registry.chat_templates:
        prompt, full = conversations(entry.name, registry)
        tokenizer.chat_template = export_jinja(entry, registry=registry)

        def ids(text):
            return tokenizer(text, add_special_tokens=False)["input_ids"]

        # training: the data pipeline's segments, tokenized as training tokenizes them
        segments = render_conversations([full], ["conv"], entry.name, tokenizer, registry=registry)[0]
        train_ids, _ = encode_segments([(s["text"], s["train"]) for s in segments], tokenizer)
        assert train_ids == ids(tokenizer.apply_chat_template(full, tokenize=False)), entry.name
        # chat: xtune's template with the generation prompt
        session = ChatSession(_NoModel(), tokenizer, registry=registry, template=entry.name)
        jinja_prompt = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        assert ids(session.render(prompt)) == ids(jinja_prompt), entry.name
        # the sample chats during training: one user turn (after the system text when there is one)
        hook = SampleChats(tokenizer, ["Name a colour."], template=entry.name, registry=registry,
                           system=prompt[0]["content"] if prompt[0]["role"] == "system" else "")
        single = ([prompt[0]] if prompt[0]["role"] == "system" else []) + [prompt[-3]]
        expected = tokenizer.apply_chat_template(single, tokenize=False, add_generation_prompt=True)
        assert hook.prompt_ids("Name a colour.") == ids(expected), entry.name
        checked += 1
    assert checked == len(registry.chat_templates) >= 26
