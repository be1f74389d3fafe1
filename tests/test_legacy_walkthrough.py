"""The seed article's walk-through, with xtune's names, on a tiny InternLM-Chat-7B-shaped checkpoint in the
hub's own layout (tests/assets/legacy/internlm): list-cfg, copy-cfg, edit the copy to point at a local
model folder and data file, train (QLoRA), pth_to_hf, merge, chat. With the real 7B folder on a GPU the
same commands run the same way; nothing here runs the hub's modelling code."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from xtune.cli.main import main

pytestmark = pytest.mark.integration
FIXTURE = Path(__file__).resolve().parent / "assets" / "legacy" / "internlm"
RECIPE = "internlm_chat_7b_qlora_oasst1_e3"


def _set(text: str, name: str, value: str) -> str:
    """Edit one top-level setting of a recipe, as a user does in the copy."""
    edited, count = re.subn(rf"^{name} = .*$", f"{name} = {value}", text, count=1, flags=re.M)
    assert count == 1, name
    return edited


def test_xtuner_tutorial_commands_on_a_tiny_internlm(tmp_path, capsys):
    if not (FIXTURE / "config.json").is_file():
        pytest.skip("tests/assets/legacy/internlm missing")
    model = tmp_path / "internlm-chat-7b"  # "a local model folder", as downloaded from the hub
    shutil.copytree(FIXTURE, model, ignore=shutil.ignore_patterns("reference.*"))
    data = tmp_path / "guanaco.jsonl"
    rows = [{"text": f"### Human: say {w} ### Assistant: {w} {w} {w}"} for w in
            ("one", "two", "three", "four", "five", "six", "seven", "eight")]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    assert main(["list-cfg", "-p", "internlm_chat_7b"]) == 0
    assert RECIPE in capsys.readouterr().out
    assert main(["copy-cfg", RECIPE, str(tmp_path)]) == 0
    copy = tmp_path / f"{RECIPE}_copy.py"
    text = copy.read_text(encoding="utf-8")
    assert "trust_remote_code = False" in text  # loaded natively: no hub code runs
    for name, value in {"pretrained_model_name_or_path": repr(str(model)), "data_path": repr(str(data)),
                        "max_length": "128", "max_steps": "3", "accumulative_counts": "1", "save_steps": "3",
                        "evaluation_freq": "3", "evaluation_inputs": "['hi']"}.items():
        text = _set(text, name, value)
    text = text.replace("max_new_tokens=256)", "max_new_tokens=16)")  # short sample chats
    copy.write_text(text, encoding="utf-8")

    work = tmp_path / "work_dirs"
    assert main(["train", str(copy), "--work-dir", str(work)]) == 0
    assert (work / "iter_3.pth").exists()
    adapter = tmp_path / "hf"
    assert main(["convert", "pth_to_hf", str(copy), str(work / "iter_3.pth"), str(adapter)]) == 0
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(model)  # the original folder, in its own layout
    targets = {name.rsplit(".", 1)[-1] for name in config["target_modules"]}
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj"} <= targets  # the native twin's names
    assert "internlm hub layout, trained natively as LlamaForCausalLM" in (adapter / "README.md").read_text()
    merged = tmp_path / "merged"
    assert main(["convert", "merge", str(model), str(adapter), str(merged)]) == 0
    assert json.loads((merged / "config.json").read_text())["model_type"] == "llama"
    capsys.readouterr()
    assert main(["chat", str(merged), "--prompt", "hi", "--max-new-tokens", "8"]) == 0
    assert capsys.readouterr().out.strip()
