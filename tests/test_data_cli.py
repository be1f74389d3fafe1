"""`xtune check-custom-dataset` and `xtune log-dataset` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import shared_path

from xtune.cli.main import main

TINY = ("reference", "models", "llama2_tiny_random", "hf_converted_DERIVED")


def _jsonl(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.integration
def test_broken_second_line_exits_2_naming_line_2(tmp_path):
    data = _jsonl(tmp_path / "d.jsonl",
                  ['{"instruction": "a", "output": "b"}', '{"instruction": "c", "output": ',
                                         '{"instruction": "e", "output": "f"}'])
    result = subprocess.run([sys.executable, "-m", "xtune", "check-custom-dataset", "--data", str(data),
                             "--format", "alpaca"], capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 2
    assert result.stderr.strip() == f"Error: {data}: line 2: malformed JSON: Expecting value (column 32)"
    assert "Traceback" not in result.stderr


def test_several_bad_records_one_error_line_each(tmp_path, capsys):
    data = _jsonl(tmp_path / "d.jsonl", ['{"instruction": "a"}', '{"instruction": "c", "output": "d"}',
                                         '{"conversations": []}'])
    assert main(["check-custom-dataset", "--data", str(data), "--format", "alpaca"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"Error: {data} line 1: field 'output': is missing",
                   f"Error: {data} line 3: field 'instruction': is missing"]


@pytest.mark.parametrize("args, message", [
    (["--data", "{tmp}/missing.jsonl", "--format", "alpaca"], "does not exist"),
    (["--data", "{tmp}/ok.jsonl", "--format", "alpacca"], "unknown data format / dataset map 'alpacca'"),
    (["--data", "{tmp}/ok.jsonl"], "--data needs --format"),
    ([], "give either RECIPE_OR_PATH or --data"),
    (["--data", "{tmp}/ok.jsonl", "--format", "alpaca", "--template", "nope"],
     "unknown chat template 'nope'"),
])
def test_usage_errors(tmp_path, capsys, args, message):
    _jsonl(tmp_path / "ok.jsonl", ['{"instruction": "a", "output": "b"}'])
    assert main(["check-custom-dataset", *[a.format(tmp=tmp_path) for a in args]]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: ") and message in err and len(err.strip().splitlines()) == 1


def test_check_file_with_template_and_tokenizer(tmp_path, capsys):
    data = shared_path("data", "multiturn_sharegpt", "fastchat_dummy_conversation_with_system.json")
    assert main(["check-custom-dataset", "--data", str(data), "--format", "sharegpt", "--template",
                 "llama2_chat",
                 "--tokenizer", str(shared_path(*TINY)), "--max-length", "64", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["records"] == 500
    assert summary["truncated"] > 0 and summary["samples"] + summary["dropped"] == 500
    assert 0 < summary["trained_tokens"] < summary["tokens"]
    assert sum(c for *_, c in summary["length_histogram"]) == summary["samples"]


def test_check_file_without_tokenizer_summarises_characters(capsys):
    data = shared_path("data", "openai_messages", "llamafactory_v1_sft_demo.jsonl")
    assert main(["check-custom-dataset", "--data", str(data), "--format", "openai"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"OK: every record of {data} is valid (openai)")
    assert "records:            500" in out and "--tokenizer" in out


@pytest.mark.integration
def test_check_recipe_with_overrides(tmp_path, capsys):
    data = _jsonl(tmp_path / "d.jsonl",
                  [json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) for i in range(9)])
    assert main(["check-custom-dataset", "llama2_7b_qlora_alpaca_e3", "--cfg-options",
                 f"pretrained_model_name_or_path={shared_path(*TINY)}", f"data_path={data}",
                 "max_length=256"]) == 0
    out = capsys.readouterr().out
    assert "records:          9" in out and "packed rows:      1 of 256 tokens" in out


@pytest.mark.integration
def test_log_dataset_marks_trained_spans(tmp_path, capsys):
    data = _jsonl(tmp_path / "d.jsonl", [json.dumps({"instruction": "Say hi", "output": "Hi!"}),
                                         json.dumps({"instruction": "Say bye", "output": "Bye."})])
    assert main(["log-dataset", "llama2_7b_qlora_alpaca_e3", "-n", "2", "--cfg-options",
                 f"pretrained_model_name_or_path={shared_path(*TINY)}", f"data_path={data}",
                 "pack_to_max_length=False"]) == 0
    out = capsys.readouterr().out
    assert "<s>[INST] Say hi [/INST][[ Hi! </s>]]" in out
    assert "<s>[INST] Say bye [/INST][[ Bye. </s>]]" in out
    assert "sample 0:" in out and "trained tokens:" in out


def test_hub_tokenizer_without_override_says_how_to_fix(capsys, tmp_path):
    data = _jsonl(tmp_path / "d.jsonl", ['{"instruction": "a", "output": "b"}'])
    assert main(["log-dataset", "llama2_7b_qlora_alpaca_e3", "--cfg-options", f"data_path={data}"]) == 2
    err = capsys.readouterr().err
    assert "could not load the tokenizer 'meta-llama/Llama-2-7b-hf'" in err
    assert "pretrained_model_name_or_path=LOCAL" in err
