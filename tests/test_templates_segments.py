"""Train flags of rendered segments, refusals, and the `xtune template` commands.

The trained text must be exactly the assistant answers with their end-of-turn text: the data pipeline
turns these segments into labels, so a prompt leak or a forgotten end token here trains a worse model.
"""

from __future__ import annotations

import json

import pytest

from xtune.cli.main import main
from xtune.errors import UsageError
from xtune.plugins import get_registry
from xtune.templates import Segment, get_template, render_segments, render_text
from xtune.templates.export import export_jinja

REGISTRY = get_registry()  # the built-in registry, passed to every call as the CLI passes its own

TEMPLATES = sorted(t.name for t in get_registry().chat_templates if t.plugin == "xtune")
CONVERSATION = [{"role": "user", "content": "Q-one"}, {"role": "assistant", "content": "A-one"},
                {"role": "user", "content": "Q-two"}, {"role": "assistant", "content": "A-two"}]


def trained(segments: list[Segment]) -> list[str]:
    return [s.text for s in segments if s.train]


def test_qwen2_5_segments():
    assert render_segments("qwen2_5_chat", CONVERSATION[:2], registry=REGISTRY) == [
        Segment(
            "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. "
            "You are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\nQ-one<|im_end|>\n<|im_start|>assistant\n",
            False,
        ),
        Segment("A-one<|im_end|>", True),
        Segment("\n", False),
    ]


@pytest.mark.parametrize(("name", "answers"),
                         [("llama2_chat", [" A-one </s>", " A-two </s>"]),
                          ("mistral", [" A-one</s>", " A-two</s>"]),
                          ("mistral_nemo", ["A-one</s>", "A-two</s>"]),
                          ("llama3_1_chat", ["A-one<|eot_id|>", "A-two<|eot_id|>"]),
                          ("gemma", ["A-one<end_of_turn>", "A-two<end_of_turn>"]),
                          ("phi3_chat", ["A-one<|end|>", "A-two<|end|>"]),
                          ("chatglm3", ["\n A-one", "\n A-two"]), ("vicuna", [" A-one</s>", " A-two</s>"]),
                          ("default", ["A-one</s>", "A-two</s>"]),
                          ("internlm_chat", ["A-one<eoa>", "A-two<eoa>"]),
                          ("deepseek_v3", ["A-one<｜end▁of▁sentence｜>", "A-two<｜end▁of▁sentence｜>"])])
def test_trained_text_is_answers_with_end_of_turn(name, answers):
    assert trained(render_segments(name, CONVERSATION, registry=REGISTRY)) == answers


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_trains_only_the_answers(name):
    segments = render_segments(name, CONVERSATION, registry=REGISTRY)
    text = render_text(name, CONVERSATION, registry=REGISTRY)
    assert "".join(s.text for s in segments) == text
    assert all(s.text for s in segments)
    assert all(a.train != b.train for a, b in zip(segments, segments[1:], strict=False))  # merged runs
    spans = trained(segments)
    assert len(spans) == 2
    for span, answer in zip(spans, ("A-one", "A-two"), strict=True):
        assert answer in span and "Q-" not in span
    template = get_template(name, registry=REGISTRY)
    end = template.assistant_end.replace("{eos_token}", template.eos_token)
    assert all(span.endswith(end) for span in spans)


@pytest.mark.parametrize("flag", [{"loss": False}, {"loss_weight": 0}, {"loss_weight": 0.0}])
def test_message_loss_switch(flag):
    messages = [dict(CONVERSATION[0]), {**CONVERSATION[1], **flag}, *CONVERSATION[2:]]
    assert trained(render_segments("llama3_chat", messages, registry=REGISTRY)) == ["A-two<|eot_id|>"]
    assert (render_text("llama3_chat", messages, registry=REGISTRY)
            == render_text("llama3_chat", CONVERSATION, registry=REGISTRY))


def test_qwen3_think_block_goes_with_the_flag():
    messages = CONVERSATION[:2]
    think = ["<think>\n\n</think>\n\nA-one<|im_end|>"]
    assert trained(render_segments("qwen3_chat", messages, registry=REGISTRY)) == think
    assert trained(render_segments("qwen3_chat", messages, enable_thinking=False, registry=REGISTRY)) == [
        "A-one<|im_end|>"]
    with_reasoning = [messages[0], {**messages[1], "reasoning_content": "because"}]
    assert trained(
        render_segments("qwen3_chat", with_reasoning, enable_thinking=False, registry=REGISTRY)) == [
            "<think>\nbecause\n</think>\n\nA-one<|im_end|>"]
    # Answers before the last question lose their reasoning, as in Qwen3's template.
    history = [messages[0], {"role": "assistant", "content": "<think>old</think>A-one"}, *CONVERSATION[2:]]
    assert trained(render_segments("qwen3_chat", history, registry=REGISTRY)) == ["A-one<|im_end|>",
                                                               "<think>\n\n</think>\n\nA-two<|im_end|>"]


def test_generation_prompt_is_never_trained():
    messages = CONVERSATION[:3]
    for name in TEMPLATES:
        segments = render_segments(name, messages, add_generation_prompt=True, registry=REGISTRY)
        assert trained(segments) == trained(render_segments(name, messages, registry=REGISTRY)), name
        assert not segments[-1].train


@pytest.mark.parametrize("name", TEMPLATES)
def test_export_generation_tags_give_the_same_mask(name):
    utils = pytest.importorskip("transformers.utils.chat_template_utils")
    template = get_template(name, registry=REGISTRY)
    messages = ([{"role": "system", "content": "Sys"}, *CONVERSATION]
                if template.system_placement != "refuse" else CONVERSATION)
    rendered, indices = utils.render_jinja_template([messages],
                                                    chat_template=export_jinja(name, generation_tags=True,
                                                                               registry=REGISTRY),
                                                    return_assistant_tokens_mask=True,
                                                    bos_token=template.bos_token,
                                                    eos_token=template.eos_token)
    segments = render_segments(name, messages, registry=REGISTRY)
    assert rendered[0] == "".join(s.text for s in segments)
    spans, pos = [], 0
    for s in segments:
        if s.train:
            spans.append((pos, pos + len(s.text)))
        pos += len(s.text)
    merged = []
    for start, end in indices[0]:
        if merged and merged[-1][1] == start:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    assert merged == spans


@pytest.mark.parametrize(("name", "messages", "fragment"),
                         [
                             ("gemma", [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                              "system message"),
                          ("mistral", [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
                           "alternate"),
                          ("llama2_chat", [{"role": "assistant", "content": "a"}], "alternate"),
                          ("mistral_nemo",
                           [{"role": "user", "content": "a"}, {"role": "system", "content": "s"}],
                           "system message after the start"),
                          ("qwen2_5_chat", [{"role": "tool", "content": "{}"}], "role 'tool'"),
                          ("qwen2_5_chat", [{"role": "user", "content": None}], "'content' must be a string"),
                          ("qwen2_5_chat", [], "non-empty list"), ("qwen2_5_chat", ["hello"], "message 0")])
def test_refusals_name_the_problem(name, messages, fragment):
    with pytest.raises(UsageError, match=fragment):
        render_segments(name, messages, registry=REGISTRY)


def test_unknown_template_suggests_close_names():
    with pytest.raises(UsageError, match="qwen2_5_chat"):
        get_template("qwen25_chat", registry=REGISTRY)


# --- the command line -------------------------------------------------------------------------------


def test_cli_list(capsys):
    assert main(["template", "list"]) == 0
    names = capsys.readouterr().out.split()
    assert names == sorted(t.name for t in get_registry().chat_templates)
    assert main(["template", "list", "--json"]) == 0
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert entries["qwen3_chat"]["stop_words"] == ["<|im_end|>", "<|endoftext|>"]


def test_cli_render_text_and_json(tmp_path, capsys):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(CONVERSATION[:3], ensure_ascii=False), encoding="utf-8")
    assert (
        main(
            ["template", "render", "llama3_1_chat", "--messages", str(path), "--add-generation-prompt"]) == 0)
    out = capsys.readouterr().out
    assert out == render_text("llama3_1_chat", CONVERSATION[:3], add_generation_prompt=True,
                              registry=REGISTRY)
    assert main(["template", "render", "llama3_1_chat", "--messages", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["text"] == render_text("llama3_1_chat", CONVERSATION[:3], registry=REGISTRY)
    assert [s["train"] for s in data["segments"]] == [False, True, False]


def test_cli_export_prints_the_jinja(capsys):
    assert main(["template", "export", "gemma"]) == 0
    assert capsys.readouterr().out == export_jinja("gemma", registry=REGISTRY)


@pytest.mark.parametrize(("content", "fragment"),
                         [
                             (
                                 json.dumps(
                                     [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]),
                              "system message"), ('[{"role": "user",\n "content": "u"', "line 2"),
                          ('{"role": "user"}', "JSON list")])
def test_cli_render_refusal_is_one_error_line(tmp_path, capsys, content, fragment):
    path = tmp_path / "m.json"
    path.write_text(content, encoding="utf-8")
    assert main(["template", "render", "gemma", "--messages", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and fragment in err[0]


def test_cli_unknown_template_and_missing_file(tmp_path, capsys):
    assert main(["template", "export", "lama3_chat"]) == 2
    assert "llama3_chat" in capsys.readouterr().err
    assert main(["template", "render", "gemma", "--messages", str(tmp_path / "nope.json")]) == 2
    assert "not found" in capsys.readouterr().err
