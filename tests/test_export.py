"""`xtune convert pth_to_hf` and `merge` on a tiny model: round trips, templates, cards, bad inputs.

The checkpoint is written the way the engine writes `iter_N.pth` (see test_export_helpers); the
adapter folder must load with plain peft and give the trained model's logits, and the merged model
must load with plain transformers and give base + adapter's logits (< 1e-4 in fp32).
"""

from __future__ import annotations

import json

import pytest
from test_export_helpers import (
    RECIPE,
    load_recipe_cfg,
    recipe_options,
    save_engine_checkpoint,
    tiny_model_dir,
    trained_lora_model,
)

from xtune.cli.main import main
from xtune.plugins import get_registry

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """base folder, trained model, checkpoint and converted adapter, shared by the tests below."""
    root = tmp_path_factory.mktemp("export")
    base = tiny_model_dir(root / "base")
    model = trained_lora_model(base)
    ckpt = save_engine_checkpoint(model, root / "iter_3.pth")
    adapter = root / "adapter"
    code = main(["convert", "pth_to_hf", RECIPE, str(ckpt), str(adapter), "--cfg-options",
                 *recipe_options(base)])
    assert code == 0
    return {"root": root, "base": base, "model": model, "ckpt": ckpt, "adapter": adapter}


def _ids():
    import torch

    return torch.tensor([[1, 5, 9, 30, 77, 120, 2, 8]])


def _logits(model):
    import torch

    with torch.no_grad():
        return model(input_ids=_ids()).logits


def test_pth_to_hf_writes_a_peft_folder_in_safetensors(run):
    names = {p.name for p in run["adapter"].iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "chat_template.jinja",
            "tokenizer.json", "tokenizer_config.json"} <= names
    assert not any(n.endswith((".bin", ".pth", ".pt")) for n in names)
    assert not list(run["root"].glob(".adapter.partial-*"))
    config = json.loads((run["adapter"] / "adapter_config.json").read_text())
    assert config[
        "peft_type"] == "LORA" and config["r"] == 64 and config["base_model_name_or_path"] == str(run["base"])


def test_adapter_loaded_by_plain_peft_gives_the_training_logits(run):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(run["base"])
    reloaded = PeftModel.from_pretrained(base, str(run["adapter"])).eval()
    expected = _logits(run["model"])
    assert (_logits(reloaded) - expected).abs().max().item() < 1e-6
    assert (_logits(AutoModelForCausalLM.from_pretrained(run["base"])) - expected).abs().max().item() > 1e-3


def test_saved_chat_template_renders_like_the_recipe_template(run):
    from transformers import AutoTokenizer

    from xtune.templates import render_text

    tokenizer = AutoTokenizer.from_pretrained(run["adapter"])
    conversation = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who are you?"},
                    {"role": "assistant", "content": "I am xtune assistant."},
                    {"role": "user", "content": "Hi"}]
    for messages, gen in ((conversation, True), (conversation[:3], False), (conversation[1:2], True)):
        expected = render_text("smollm2_chat", messages, add_generation_prompt=gen,
                               registry=get_registry())  # as training renders
        assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=gen) == expected
    assert tokenizer.padding_side == "left"


def test_model_card_names_recipe_base_data_and_final_loss(run):
    card = (run["adapter"] / "README.md").read_text()
    assert RECIPE in card and str(run["base"]) in card and "self_cognition" in card
    assert "final training loss | 2.0000" in card  # mean of the logged 2.5, 2.0, 1.5
    assert "library_name: peft" in card and "optimizer steps | 3" in card


def test_merge_matches_base_plus_adapter_and_loads_with_plain_transformers(run):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged_dir = run["root"] / "merged"
    assert main(["convert", "merge", str(run["base"]), str(run["adapter"]), str(merged_dir),
                 "--dtype", "float32"]) == 0
    assert (merged_dir / "model.safetensors").is_file() and not (merged_dir / "adapter_config.json").exists()
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    assert merged.dtype == torch.float32
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run["base"]),
                                          str(run["adapter"]))
    assert (_logits(merged) - _logits(reference.eval())).abs().max().item() < 1e-4
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(run["adapter"]).chat_template
    card = (merged_dir / "README.md").read_text()
    assert "library_name: transformers" in card and "merged from adapter" in card and RECIPE in card


def test_merge_shards_with_max_shard_size(run):
    out = run["root"] / "sharded"
    assert main(["convert", "merge", str(run["base"]), str(run["adapter"]), str(out), "--max-shard-size",
                 "20KB"]) == 0
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()


def test_existing_output_needs_force(run, capsys):
    adapter = run["adapter"]
    before = (adapter / "adapter_model.safetensors").stat().st_mtime_ns
    code = main(["convert", "pth_to_hf", RECIPE, str(run["ckpt"]), str(adapter), "--cfg-options",
                 *recipe_options(run["base"])])
    assert code == 2 and "already exists" in capsys.readouterr().err
    assert (adapter / "adapter_model.safetensors").stat().st_mtime_ns == before
    out = run["root"] / "forced"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    assert main(["convert", "pth_to_hf", RECIPE, str(run["ckpt"]), str(out), "--force", "--cfg-options",
                 *recipe_options(run["base"])]) == 0
    assert (out / "adapter_model.safetensors").is_file() and not (out / "stale.txt").exists()


def test_interrupted_convert_leaves_no_partial_output(run, monkeypatch, capsys):
    import xtune.export.pth_to_hf as pth_to_hf

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pth_to_hf, "save_tokenizer", interrupted)  # after the adapter weights are written
    out = run["root"] / "interrupted"
    code = main(["convert", "pth_to_hf", RECIPE, str(run["ckpt"]), str(out), "--cfg-options",
                 *recipe_options(run["base"])])
    assert code == 130
    assert not out.exists() and not list(run["root"].glob(".interrupted*"))


@pytest.mark.parametrize("case",
                         ["unknown_recipe", "missing_ckpt", "corrupt_ckpt", "wrong_rank", "bad_option",
                                  "no_kind"])
def test_bad_convert_inputs_exit_2(run, case, capsys):
    root, base, ckpt = run["root"], run["base"], run["ckpt"]
    out = root / f"bad-{case}"
    opts = recipe_options(base)
    if case == "unknown_recipe":
        argv = ["convert", "pth_to_hf", "smollm2_135m_lora_nonsense_e3", str(ckpt), str(out)]
        expect = "smollm2_135m_lora_nonsense_e3"
    elif case == "missing_ckpt":
        argv = ["convert", "pth_to_hf", RECIPE, str(root / "iter_99.pth"), str(out), "--cfg-options", *opts]
        expect = "iter_99.pth' does not exist"
    elif case == "corrupt_ckpt":
        import shutil

        bad = root / "iter_7.pth"
        shutil.copytree(ckpt, bad)
        (bad / "model.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes()[:300])
        argv = ["convert", "pth_to_hf", RECIPE, str(bad), str(out), "--cfg-options", *opts]
        expect = "its tensors are unreadable"
    elif case == "wrong_rank":  # trained with r=64, converted with a recipe saying r=8
        argv = ["convert", "pth_to_hf", RECIPE, str(ckpt), str(out), "--cfg-options", *opts, "method_cfg.r=8"]
        expect = "does not fit recipe"
    elif case == "bad_option":
        argv = ["convert", "pth_to_hf", RECIPE, str(ckpt), str(out), "--cfg-options", "learning_rate=1"]
        expect = "unknown setting 'learning_rate'"
    else:
        argv = ["convert"]
        expect = "pth_to_hf, merge, gguf_to_hf or hf_to_gguf"
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("Error: ") and expect in err[-1]
    assert not out.exists()


def test_merge_refuses_a_4bit_base_and_a_foreign_adapter(run, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantized = tmp_path / "base-4bit"
    AutoModelForCausalLM.from_pretrained(
        run["base"], quantization_config=BitsAndBytesConfig(load_in_4bit=True)).save_pretrained(quantized)
    assert main(["convert", "merge", str(quantized), str(run["adapter"]), str(tmp_path / "m1")]) == 2
    assert "stored quantised (bitsandbytes)" in capsys.readouterr().err
    other = tiny_model_dir(tmp_path / "other", hidden=32)  # same module names, other shapes
    assert main(["convert", "merge", str(other), str(run["adapter"]), str(tmp_path / "m2")]) == 2
    assert "does not fit base model" in capsys.readouterr().err
    assert main(["convert", "merge", str(run["base"]), str(run["base"]), str(tmp_path / "m3")]) == 2
    assert "not a PEFT adapter folder" in capsys.readouterr().err
    assert not any((tmp_path / f"m{i}").exists() for i in (1, 2, 3))


def test_full_tuning_converts_to_a_full_model_in_safetensors(run, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from xtune.models.build import build_trainable
    from xtune.plugins import get_registry

    recipe = "smollm2_135m_instruct_full_alpaca_e3"
    cfg = load_recipe_cfg(run["base"])  # the self-cognition recipe's model section, switched to full tuning
    cfg.method_cfg = {"type": "full"}
    from xtune.plan import resolve_plan

    trained = build_trainable(cfg, get_registry(), resolve_plan(cfg, get_registry()), for_export=True)
    model, method = trained.model, trained.method
    assert method.name == "full" and not method.uses_peft
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ckpt = tmp_path / "iter_5.pth"
    torch.save({"meta": {}, "state_dict": {f"llm.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    out = tmp_path / "full"
    assert main(["convert", "pth_to_hf", recipe, str(ckpt), str(out), "--cfg-options",
                 f"pretrained_model_name_or_path={run['base']}", "--max-shard-size", "30KB"]) == 0
    assert (out / "model.safetensors.index.json").is_file() and not (out / "adapter_config.json").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    assert reloaded.config.use_cache is True
    assert (_logits(reloaded) - _logits(model.eval())).abs().max().item() < 1e-6
    assert "library_name: transformers" in (out / "README.md").read_text()
