"""One run plan: the recipe and its overrides resolved once (`xtune.plan`), read by training and the memory
estimate alike, so they cannot disagree (they did: a QLoRA recipe whose quantisation section says 8 bit
trained in 8 bit and was estimated in 4)."""

from __future__ import annotations

import json

import pytest

from xtune.plan import resolve_plan
from xtune.plugins import get_registry
from xtune.recipe import load_recipe
from xtune.recipe_files import resolve_recipe

QLORA = "internlm2_chat_7b_qlora_oasst1_e3"
EIGHT_BIT = ["model.quantization={'load_in_8bit': True}"]


def plan_of(recipe: str, options: list[str], deepspeed: str | None = None):
    registry = get_registry()
    cfg = load_recipe(resolve_recipe(recipe, registry), options)
    return cfg, resolve_plan(cfg, registry, recipe=recipe, deepspeed=deepspeed)


def test_the_quantisation_section_decides_the_bits_for_training_and_the_estimate():
    from xtune.estimate.settings import plan_for_recipe

    registry = get_registry()
    for options, bits in (([], 4), (EIGHT_BIT, 8)):
        cfg, plan = plan_of(QLORA, options)
        assert plan.model.load_in_bits == bits
        assert plan_for_recipe(cfg, registry, plan)[1].load_in_bits == bits
    cfg, plan = plan_of("internlm2_chat_7b_lora_alpaca_e3", [])
    assert plan.model.load_in_bits is None and not plan.model.quantization


def test_the_plan_resolves_the_method_once():
    cfg, plan = plan_of(QLORA, ["method_cfg.r=8"])
    assert (plan.method.name, plan.method.uses_peft, plan.method.settings["r"]) == ("qlora", True, 8)
    assert plan.method.settings["target_modules"] == "all-linear"  # 'auto' -> the model adapter's choice
    _, full = plan_of("internlm2_chat_7b_full_alpaca_e3", [])
    assert "r" not in full.method.settings and not full.method.uses_peft  # LoRA settings dropped
    assert plan.objective.name == "sft" and plan.training.accumulation == 16
    with pytest.raises(TypeError):
        plan.method.settings["r"] = 4  # frozen
    assert json.loads(json.dumps(plan.to_dict()))["model"]["quantization"]["load_in_4bit"] is True


def test_estimate_json_prints_the_plan_training_uses(capsys):
    from xtune.cli.main import main

    assert main(["estimate", QLORA, "--json", "--deepspeed", "zero2", "--cfg-options", *EIGHT_BIT]) == 0
    printed = json.loads(capsys.readouterr().out)
    _, plan = plan_of(QLORA, EIGHT_BIT, deepspeed="zero2")
    assert printed["run_plan"] == plan.to_dict()
    assert printed["plan"]["load_in_bits"] == 8 and printed["run_plan"]["training"]["deepspeed"] == "zero2"


@pytest.mark.integration
def test_train_writes_the_plan_estimate_prints(tmp_path, capsys):
    """`xtune train` writes WORK_DIR/plan.json: the same object `xtune estimate --json` prints for the same
    recipe and options (here a QLoRA recipe switched to an 8-bit base)."""
    from test_engine_fixtures import make_assets

    from xtune.cli.main import main

    model_dir, data = make_assets(tmp_path / "assets")
    options = [f"pretrained_model_name_or_path={model_dir}", f"data_path={data}", "max_length=64",
               "batch_size=2", "accumulative_counts=1", "max_steps=1", "save_steps=0", "evaluation_inputs=[]",
               "export_hf=False", *EIGHT_BIT]
    recipe = "llama2_7b_qlora_alpaca_e3"
    assert main(["train", recipe, "--work-dir", str(tmp_path / "wd"), "--cfg-options", *options]) == 0
    trained = json.loads((tmp_path / "wd" / "plan.json").read_text())
    capsys.readouterr()
    assert main(["estimate", recipe, "--json", "--device", "cpu", "--cfg-options", *options]) == 0
    assert json.loads(capsys.readouterr().out)["run_plan"] == trained
    assert trained["model"]["quantization"]["load_in_8bit"] is True
