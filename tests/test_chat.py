"""`xtune chat`: template choice, stop words, streaming, history, --prompt / stdin / interactive, bad input.

Models are the tiny ones of test_export_helpers. To see generation stop at a stop word, one test gives
the tiny model an output layer that always predicts the same token, so its answer is known in advance.
"""

from __future__ import annotations

import io

import pytest
from test_export_helpers import shared_gguf, tiny_model_dir, trained_lora_model

from xtune.chat.stops import StopFilter, cut_at_stop
from xtune.cli.main import main
from xtune.plugins import get_registry

REGISTRY = get_registry()  # the built-in registry, passed to every call as the CLI passes its own


# ---------------------------------------------------------------------------------------- stop words
def test_cut_at_stop_takes_the_earliest_stop_word():
    assert cut_at_stop("Hi there<|im_end|>junk</s>", ["</s>", "<|im_end|>"]) == ("Hi there", True)
    assert cut_at_stop("no stop here", ["</s>"]) == ("no stop here", False)


def test_stop_filter_holds_back_a_stop_word_split_over_chunks():
    f = StopFilter(["<|im_end|>"])
    assert f.feed("Hello <|im") == "Hello "
    assert f.feed("_end|> more") == "" and f.stopped
    assert f.feed("ignored") == "" and f.finish() == ""
    assert f.text == "Hello "


def test_stop_filter_releases_a_false_alarm_prefix():
    f = StopFilter(["###"])
    assert f.feed("a #") == "a " and f.feed("# b") == "## b" and not f.stopped
    assert f.feed("#") == "" and f.finish() == "#" and f.text == "a ## b#"


# ---------------------------------------------------------------------------------------- sessions
@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("chat") / "base")


@pytest.fixture(scope="module")
def adapter_dir(base_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("chat") / "adapter"
    trained_lora_model(base_dir).save_pretrained(out)
    return out


def _session(base_dir, **kwargs):
    from xtune.chat.session import ChatSession, GenerationSettings
    from xtune.models.build import load_for_inference

    model, tokenizer = load_for_inference(str(base_dir), registry=REGISTRY)
    settings = GenerationSettings(max_new_tokens=kwargs.pop("max_new_tokens", 6), temperature=0)
    return ChatSession(model, tokenizer, registry=REGISTRY, settings=settings, **kwargs)


def _always_say(session, token: int) -> str:
    """Make the model predict `token` at every position (greedy decoding then repeats it); its text."""
    import torch

    head = session.model.lm_head
    new_head = torch.nn.Linear(head.in_features, head.out_features, bias=True, dtype=head.weight.dtype)
    with torch.no_grad():
        new_head.weight.zero_()
        new_head.bias.fill_(-10.0)
        new_head.bias[token] = 10.0
    session.model.lm_head = new_head
    return session.tokenizer.decode([token])


def test_a_converted_models_template_is_recognised_with_its_stop_words(base_dir):
    session = _session(base_dir, system="Be brief.")
    assert session.use_tokenizer_template and session.template == "smollm2_chat"
    assert session.stop_words[:2] == ["<|im_end|>", "<|endoftext|>"]
    assert session.tokenizer.convert_tokens_to_ids("<|im_end|>") in session.eos_token_ids
    messages = session.messages("Who are you?")
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert session.render(messages) == session.tokenizer.apply_chat_template(messages, tokenize=False,
                                                                             add_generation_prompt=True)


def test_prompt_template_option_and_family_default(base_dir):
    from xtune.templates import render_text

    session = _session(base_dir, template="chatml")
    assert not session.use_tokenizer_template and session.template == "chatml"
    # Rendered as training renders it: with the tokenizer's own BOS / EOS.
    tok = session.tokenizer
    assert session.render(session.messages("Hi")) == render_text("chatml", session.messages("Hi"), True,
                                                                 bos_token=tok.bos_token,
                                                                 eos_token=tok.eos_token, registry=REGISTRY)
    session.tokenizer.chat_template = None
    from xtune.chat.session import ChatSession

    by_name = ChatSession(session.model, session.tokenizer, registry=REGISTRY,
                          model_name="HuggingFaceTB/SmolLM2-135M-Instruct")
    assert by_name.template == "smollm2_chat"


@pytest.mark.parametrize("stream", [False, True])
def test_generation_stops_at_the_end_token_and_at_text_stop_words(base_dir, stream):
    session = _session(base_dir, max_new_tokens=40)
    pieces = []
    on_text = pieces.append if stream else None
    _always_say(session, session.tokenizer.convert_tokens_to_ids("<|im_end|>"))
    assert session.ask("Hello", on_text=on_text) == ""
    piece = _always_say(session, session.tokenizer.encode("Hello", add_special_tokens=False)[0])
    assert piece == "Hello"
    session.stop_words.append("loHel")  # a text stop word across a token boundary: "Hel|loHel|loHel..."
    answer = session.ask("Hello again", on_text=on_text)
    assert answer == "Hel"
    if stream:
        assert "".join(pieces) == "Hel"
    assert [m["role"] for m in session.history] == ["user", "assistant", "user", "assistant"]
    session.reset()
    assert session.history == []


def test_interactive_loop_keeps_history_resets_and_exits(base_dir, capsys):
    from xtune.chat.repl import interactive

    session = _session(base_dir)
    lines = iter(["Hello", "", "/reset", "Who are you?", "/exit", "never read"])
    assert interactive(session, stream=True, read=lambda prompt: next(lines)) == 0
    assert len(session.history) == 2 and session.history[0]["content"] == "Who are you?"
    assert next(lines) == "never read"

    def ctrl(exc):
        def read(prompt):
            raise exc
        return read

    assert interactive(session, stream=False, read=ctrl(EOFError())) == 0
    assert interactive(session, stream=False, read=ctrl(KeyboardInterrupt())) == 0
    assert "/reset" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- CLI
@pytest.mark.integration
def test_chat_prompt_answers_once_and_exits_0(base_dir, capsys):
    assert main(["chat", str(base_dir), "--prompt", "Hello", "--max-new-tokens", "5", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    assert out.endswith("\n") and out.strip()


@pytest.mark.integration
def test_chat_reads_a_piped_message(base_dir, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello from a pipe\n"))
    assert main(["chat", str(base_dir), "--max-new-tokens", "4", "--temperature", "0", "--no-stream"]) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.integration
def test_chat_4bit_with_adapter_answers(base_dir, adapter_dir, capsys):
    assert main(["chat", str(base_dir), "--adapter", str(adapter_dir), "--bits", "4", "--prompt", "Hello",
                 "--max-new-tokens", "4", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.integration
def test_chat_a_gguf_file(capsys):
    assert main(["chat", str(shared_gguf()), "--prompt", "Hello", "--max-new-tokens", "3", "--temperature",
                 "0",
                 "--prompt-template", "llama2_chat"]) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("args, expect", [
    (["MISSING", "--prompt", "Hi"], "does not exist"),
    (["BASE", "--adapter", "MISSING", "--prompt", "Hi"], "adapter folder"),
    (["BASE", "--prompt-template", "chatmlx", "--prompt", "Hi"], "unknown chat template 'chatmlx'"),
    (["BASE", "--bits", "3", "--prompt", "Hi"], "invalid choice: 3"),
    (["BASE", "--top-p", "0", "--prompt", "Hi"], "--top-p 0.0"),
    (["BASE", "--prompt", "  "], "--prompt is empty"),
])
def test_bad_chat_inputs_exit_2(base_dir, tmp_path, args, expect, capsys):
    args = [str(tmp_path / "missing") if a == "MISSING" else str(base_dir) if a == "BASE" else a
            for a in args]
    assert main(["chat", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("Error: ") and expect in err[-1]
