"""Record converters, the conversation checks, and local sources with their error messages."""

from __future__ import annotations

import json

import pytest

from xtune.data import formats
from xtune.data.conversation import RecordError, apply_settings, validate
from xtune.data.sources import load_local, load_source, read_file
from xtune.errors import DataError


def roles(messages):
    return [(m["role"], m["content"], m["loss"]) for m in messages]


def test_alpaca_joins_input_and_keeps_system_and_history():
    record = {"instruction": "Sum", "input": "1 2", "output": "3", "system": "Be exact.",
              "history": [["hi", "hello"]]}
    assert roles(formats.alpaca(record)) == [
        ("system", "Be exact.", False), ("user", "hi", False), ("assistant", "hello", True),
        ("user", "Sum\n1 2", False), ("assistant", "3", True)]


def test_alpaca_custom_columns_and_absent_input():
    record = {"question": "Q?", "context": "ignored?", "answer": "A."}
    messages = formats.alpaca(record, instruction="question", input=None, output="answer")
    assert roles(messages) == [("user", "Q?", False), ("assistant", "A.", True)]


@pytest.mark.parametrize("record, field", [
    ({"output": "x"}, "instruction"),
    ({"instruction": 5, "output": "x"}, "instruction"),
    ({"instruction": "x"}, "output"),
    ({"instruction": "x", "output": "y", "history": [["only one"]]}, "history"),
])
def test_alpaca_names_the_bad_field(record, field):
    with pytest.raises(RecordError) as info:
        formats.alpaca(record)
    assert info.value.field == field


def test_sharegpt_roles_function_call_and_observation():
    record = {"system": "S", "conversations": [
        {"from": "human", "value": "weather?"}, {"from": "function_call", "value": '{"name": "w"}'},
        {"from": "observation", "value": "sunny"}, {"from": "gpt", "value": "It is sunny."}]}
    assert roles(formats.sharegpt(record)) == [
        ("system", "S", False), ("user", "weather?", False), ("assistant", '{"name": "w"}', True),
        ("tool", "sunny", False), ("assistant", "It is sunny.", True)]


def test_sharegpt_tool_schemas_join_the_system_prompt():
    turns = [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    out = formats.sharegpt({"conversations": turns, "tools": '[{"name": "w"}]'})
    assert out[0] == {"role": "system", "content": '[{"name": "w"}]', "loss": False}
    out = formats.sharegpt({"conversations": turns, "system": "S", "tools": [{"name": "w"}]})
    assert out[0]["content"] == 'S\n\n[{"name": "w"}]'
    assert formats.sharegpt({"conversations": turns, "tools": ""})[0]["role"] == "user"


def test_sharegpt_unknown_role_lists_valid_ones():
    with pytest.raises(RecordError, match="unknown role 'robot'.*gpt.*human"):
        formats.sharegpt({"conversations": [{"from": "robot", "value": "x"}]})


def test_sharegpt_custom_tags():
    record = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    out = formats.sharegpt(record, messages="messages", role_tag="role", content_tag="content",
                           user_tag="user", assistant_tag="assistant")
    assert roles(out) == [("user", "a", False), ("assistant", "b", True)]


def test_openai_loss_flags_and_text_parts():
    record = {"messages": [
        {"role": "user", "content": [{"type": "text", "value": "hi"}], "loss_weight": 0.0},
        {"role": "assistant", "content": "first", "loss_weight": 0.0},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": [{"type": "text", "text": "second"}], "loss": True}]}
    assert roles(formats.openai(record)) == [
        ("user", "hi", False), ("assistant", "first", False), ("user", "again", False),
        ("assistant", "second", True)]


def test_openai_rejects_fractional_loss_weight():
    record = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b",
                                                              "loss_weight": 0.5}]}
    with pytest.raises(RecordError) as info:
        formats.openai(record)
    assert info.value.field == "messages[1].loss_weight"


def test_oasst1_text_split():
    text = "### Human: Hi there### Assistant: Hello!### Human: Bye### Assistant: See you."
    assert roles(formats.oasst1({"text": text})) == [
        ("user", "Hi there", False), ("assistant", "Hello!", True), ("user", "Bye", False),
        ("assistant", "See you.", True)]
    with pytest.raises(RecordError, match="must start"):
        formats.oasst1({"text": "hello ### Human: x"})


def test_moss_turns_and_meta_instruction():
    record = {"meta_instruction": "You are MOSS.", "chat": {
        "turn_2": {"Human": "<|Human|>: second<eoh>\n", "MOSS": "<|MOSS|>: two<eom>\n"},
        "turn_1": {"Human": "<|Human|>: first<eoh>\n", "MOSS": "<|MOSS|>: one<eom>\n"}}}
    assert roles(formats.moss(record)) == [
        ("system", "You are MOSS.", False), ("user", "first", False), ("assistant", "one", True),
        ("user", "second", False), ("assistant", "two", True)]


def test_self_cognition_fills_both_placeholder_styles():
    record = {"instruction": "Who are you, <NAME>?", "output": "I am {{name}} by {{author}} (<AUTHOR>)."}
    out = formats.self_cognition(record, name="Ada", author="Lab")
    assert out[-2]["content"] == "Who are you, Ada?"
    assert out[-1]["content"] == "I am Ada by Lab (Lab)."


def test_pretrain_is_one_trained_text_message():
    assert formats.pretrain({"text": "plain words"}) == [{"role": "text", "content": "plain words",
                                                          "loss": True}]


def test_validate_and_settings():
    chat = formats.alpaca({"instruction": "q", "output": "a", "history": [["q0", "a0"]]})
    last = apply_settings(chat, system="S", train_on="last_turn")
    assert [m["loss"] for m in last] == [False, False, False, False, True]
    assert last[0] == {"role": "system", "content": "S", "loss": False}
    validate(last)
    unanswered = chat + [{"role": "user", "content": "and?", "loss": False}]
    assert apply_settings(unanswered) == chat  # a trailing unanswered question is cut
    with pytest.raises(RecordError, match="end with an assistant"):
        validate([{"role": "user", "content": "q", "loss": False}])
    with pytest.raises(RecordError, match="no assistant message is trained"):
        validate([{"role": "user", "content": "q", "loss": False},
                  {"role": "assistant", "content": "a", "loss": False}])
    with pytest.raises(RecordError, match="unknown role 'bot'.*system, user, assistant, tool"):
        validate([{"role": "bot", "content": "q", "loss": False}])


# ------------------------------------------------------------------------------------------ sources
def write(path, text, encoding="utf-8"):
    path.write_text(text, encoding=encoding)
    return path


def test_json_array_records_know_their_lines(tmp_path):
    path = write(tmp_path / "d.json", json.dumps([{"a": 1}, {"a": 2}], indent=2))
    records, wheres = read_file(path)
    assert records == [{"a": 1}, {"a": 2}]
    assert wheres == [f"{path} record 0 (line 2)", f"{path} record 1 (line 5)"]


def test_malformed_json_names_file_and_line(tmp_path):
    path = write(tmp_path / "d.json", '[\n  {"a": 1},\n  {"a": 2,}\n]')
    with pytest.raises(DataError, match=r"d\.json: line 3: malformed JSON"):
        read_file(path)


def test_jsonl_collects_every_bad_line(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"a": 1}\n{"a": \n\n{"a": 3}\n[1, 2]\nnot json\n')
    with pytest.raises(DataError) as info:
        read_file(path)
    message = str(info.value)
    assert "line 2: malformed JSON" in message and "line 6: malformed JSON" in message
    assert "line 5: a record must be a JSON object, got list" in message
    assert message.count("\nError: ") == 2  # one Error: line per problem when the CLI prints it


def test_csv_parquet_xlsx_txt(tmp_path):
    import openpyxl
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"instruction": "q1", "output": "a1"}, {"instruction": "q2", "output": "a2"}]
    write(tmp_path / "d.csv", "instruction,output\nq1,a1\nq2,a2\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    book = openpyxl.Workbook()
    book.active.append(["instruction", "output"])
    for r in rows:
        book.active.append([r["instruction"], r["output"]])
    book.save(tmp_path / "d.xlsx")
    for name in ("d.csv", "d.parquet", "d.xlsx"):
        assert read_file(tmp_path / name)[0] == rows, name
    assert read_file(tmp_path / "d.csv")[1][1].endswith("d.csv line 3")
    write(tmp_path / "t.txt", "first doc\n\nsecond doc\n")
    assert read_file(tmp_path / "t.txt") == ([{"text": "first doc"}, {"text": "second doc"}],
                                            [f"{tmp_path / 't.txt'} line 1", f"{tmp_path / 't.txt'} line 3"])


def test_folder_source_concatenates_sorted_files(tmp_path):
    write(tmp_path / "b.jsonl", '{"x": 2}\n')
    write(tmp_path / "a.json", '[{"x": 1}]')
    (tmp_path / ".hidden").mkdir()
    write(tmp_path / ".hidden" / "c.jsonl", '{"x": 3}\n')
    source = load_source(str(tmp_path))
    assert [r for _, r in source] == [{"x": 1}, {"x": 2}]


def test_bad_sources_say_what_is_wrong(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_source(str(tmp_path / "missing.jsonl"))
    with pytest.raises(DataError, match="empty"):
        load_local(str(write(tmp_path / "e.json", "[]")))
    with pytest.raises(DataError, match="holds no data files"):
        (tmp_path / "empty").mkdir()
        load_local(str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"line 2: not UTF-8"):
        (tmp_path / "l1.jsonl").write_bytes('{"a": "x"}\n{"a": "caf\u00e9"}\n'.encode("latin-1"))
        read_file(tmp_path / "l1.jsonl")
    with pytest.raises(DataError, match="unsupported file type '.yaml'"):
        read_file(write(tmp_path / "d.yaml", "a: 1"))


def test_modelscope_prefix_dispatches(monkeypatch):
    import xtune.data.sources as sources

    seen = {}
    monkeypatch.setattr(sources, "load_modelscope", lambda repo, **kw: seen.setdefault("ms", (repo, kw)))
    monkeypatch.setattr(sources, "load_hub", lambda repo, **kw: seen.setdefault("hub", (repo, kw)))
    load_source("modelscope://AI-ModelScope/alpaca-gpt4-data-en")
    load_source("tatsu-lab/alpaca", split="train")
    assert seen["ms"][0] == "AI-ModelScope/alpaca-gpt4-data-en"
    assert seen["hub"] == ("tatsu-lab/alpaca", {"config": None, "split": "train", "data_files": None})


def test_hub_miss_offline_is_a_data_error():
    with pytest.raises(DataError, match="could not load the hub data set 'nobody/no-such-set-xtune'"):
        load_source("nobody/no-such-set-xtune")
