"""The issue's "done when" path with the real engine: `xtune train llama2_7b_lora_alpaca_e3` on the tiny
Llama-2 of shared/, then `convert pth_to_hf`, `convert merge` and `chat`, all through the CLI.

The automatic export (`WORK_DIR/hf`, written when training ends) must hold exactly the tensors that
`convert pth_to_hf` extracts from the last checkpoint, and the merged model must reproduce base + adapter.
"""

from __future__ import annotations

import pytest
from conftest import shared_path

from xtune.cli.main import main

pytestmark = pytest.mark.integration

RECIPE = "llama2_7b_lora_alpaca_e3"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    base = shared_path("reference", "models", "llama2_tiny_random", "hf_converted_DERIVED")
    data = shared_path("data", "alpaca", "llamafactory_alpaca_en_demo.json")
    root = tmp_path_factory.mktemp("train")
    options = [f"pretrained_model_name_or_path={base}", f"data_path={data}", "max_steps=2", "max_length=128",
               "accumulative_counts=1", "evaluation_inputs=[]", "save_steps=1", "lr=0.01"]
    assert main(["train", RECIPE, "--work-dir", str(root / "wd"), "--cfg-options", *options]) == 0
    return root, base, options


def test_train_exports_hf_and_pth_to_hf_agrees(trained):
    import torch
    from safetensors.torch import load_file

    root, base, options = trained
    auto = root / "wd" / "hf"
    assert (auto / "adapter_config.json").is_file() and (auto / "chat_template.jinja").is_file()
    out = root / "adapter"
    assert main(["convert", "pth_to_hf", RECIPE, str(root / "wd" / "iter_2.pth"), str(out),
                 "--cfg-options", *options]) == 0
    exported, converted = load_file(
        auto / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    assert exported.keys() == converted.keys()
    assert all(torch.equal(exported[k], converted[k]) for k in exported)
    assert any(v.abs().max() > 0 for k, v in converted.items() if "lora_B" in k)  # trained, not the zero init
    card = (auto / "README.md").read_text()
    assert RECIPE in card and "final training loss" in card and "optimizer steps | 2" in card


def test_merge_then_chat_with_the_merged_and_the_4bit_adapter(trained, capsys):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    root, base, _ = trained
    adapter, merged = root / "wd" / "hf", root / "merged"
    assert main(["convert", "merge", str(base), str(adapter), str(merged), "--dtype", "float32"]) == 0
    ids = torch.tensor([[1, 450, 4996, 17354, 1701, 29916, 432, 17204]])
    with torch.no_grad():
        got = AutoModelForCausalLM.from_pretrained(merged)(input_ids=ids).logits
        ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base),
                                        str(adapter))(input_ids=ids).logits
    assert (got - ref).abs().max().item() < 1e-4
    capsys.readouterr()
    assert main(["chat", str(merged), "--prompt", "Hello", "--max-new-tokens", "4", "--temperature",
                 "0"]) == 0
    assert main(["chat", str(base), "--adapter", str(adapter), "--bits", "4", "--prompt", "Hello",
                 "--max-new-tokens", "4", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.count("\n") >= 2
