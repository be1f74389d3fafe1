"""The embedded demo (tools/demo.py, the README's first command) and its model getter.

`--quick --base TINY` runs every demo command — chat, train, convert pth_to_hf, merge, chat — on the tiny
model with no network, so the first command cannot silently break. The same demo on the real SmolLM2
(which needs PyPI once for the wheel, then minutes of CPU) is marked slow.
"""

from __future__ import annotations

import os
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
    for step in ("[1/7]", "[2/7]", "[3/7]", "[4/7]", "[5/7]", "[6/7]", "[7/7]", "before:", "after:",
                 "wall time"):
        assert step in out
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
    assert "[7/7]" in result.stdout and "after:" in result.stdout
