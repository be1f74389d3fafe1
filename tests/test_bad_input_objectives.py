"""Nothing silently wrong in the preference paths: a causal LM or an SFT adapter given where a reward model
belongs (`xtune reward`, PPO), KTO records of another layout, and `xtune estimate` of a run that `xtune
train` refuses each end in one `Error:` line (exit 2), with nothing printed as a result and nothing written.
"""

from __future__ import annotations

import json
import shutil

import pytest
from test_engine_fixtures import alpaca_records, make_assets

from xtune.cli.main import main

pytestmark = pytest.mark.integration  # builds tiny models; the refusals themselves load none

PPO = "smollm2_135m_instruct_lora_ppo_ultrafeedback_e1"
KTO = "smollm2_135m_instruct_lora_kto_kto_mix_e1"
FULL_DPO = "smollm2_135m_instruct_full_dpo_ultrafeedback_e1"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """(tiny causal LM, alpaca file, a LoRA adapter of the causal LM as SFT leaves one)."""
    root = tmp_path_factory.mktemp("objectives")
    model_dir, data = make_assets(root)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    lora = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                          LoraConfig(task_type="CAUSAL_LM", r=2, target_modules=["q_proj"]))
    lora.save_pretrained(root / "sft_adapter")
    return model_dir, data, root / "sft_adapter"


def one_error(capsys) -> str:
    """The single `Error:` line of the last command; nothing on stdout (no score, no figures)."""
    captured = capsys.readouterr()
    lines = [x for x in captured.err.splitlines() if x.startswith("Error:")]
    assert len(lines) == 1, captured.err[-2000:]
    assert captured.out.strip() == "", captured.out
    return lines[0]


def reward(model) -> int:
    return main(["reward", str(model), "--prompt", "write the park", "--response", "the cat sat",
                 "--prompt-template", "llama2_chat"])


def test_reward_refuses_a_causal_lm_before_scoring(assets, capsys):
    capsys.readouterr()
    assert reward(assets[0]) == 2
    line = one_error(capsys)
    assert str(assets[0]) in line and "(LlamaForCausalLM) is not a reward model" in line
    assert "score head" in line and "reward recipe" in line


def test_reward_refuses_a_model_whose_score_head_the_load_left_missing(assets, tmp_path, capsys):
    """Without `architectures` in config.json (or a hub id) the folder is known only once loaded: a score
    head transformers had to initialise is refused then."""
    copy = tmp_path / "no_arch"
    shutil.copytree(assets[0], copy)
    config = json.loads((copy / "config.json").read_text())
    del config["architectures"]
    (copy / "config.json").write_text(json.dumps(config))
    capsys.readouterr()
    assert reward(copy) == 2
    line = one_error(capsys)
    assert "is not a reward model" in line and "score.weight" in line


def test_reward_refuses_an_sft_adapter(assets, capsys):
    capsys.readouterr()
    assert reward(assets[2]) == 2
    line = one_error(capsys)
    assert str(assets[2]) in line and "adapter trained for a causal LM" in line and "CAUSAL_LM" in line
    assert "not as a reward model" in line


def train(recipe, work_dir, *options, deepspeed=None) -> int:
    extra = ["--deepspeed", deepspeed] if deepspeed else []
    return main(["train", recipe, "--work-dir", str(work_dir), *extra, "--cfg-options", *options])


@pytest.mark.parametrize("which, expect", [(0, "(LlamaForCausalLM) is not a reward model"),
                                           (2, "is an adapter trained for a causal LM")])
def test_ppo_refuses_a_reward_model_that_is_none_in_preflight(assets, tmp_path, capsys, which, expect):
    model_dir, data, _ = assets
    wd = tmp_path / "wd"
    capsys.readouterr()
    assert train(PPO, wd, f"pretrained_model_name_or_path={model_dir}", f"data_path={data}",
                 "dataset_map=alpaca", f"objective.reward_model={assets[which]}", "max_steps=1") == 2
    line = one_error(capsys)
    assert f"objective.reward_model: '{assets[which]}'" in line and expect in line
    assert not wd.exists()


def test_kto_names_every_missing_field_of_a_record_at_once(assets, tmp_path, capsys):
    model_dir, _, _ = assets
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps(alpaca_records(5)))  # a whole file of another layout: one line, not five
    wd = tmp_path / "wd"
    capsys.readouterr()
    assert train(KTO, wd, f"pretrained_model_name_or_path={model_dir}", f"data_path={data}", "max_steps=1",
                 "prompt_template=llama2_chat") == 2
    line = one_error(capsys)
    assert f"{data} record 0" in line and "and all 4 other records" in line
    assert "fields 'label', 'prompt', 'completion' are missing" in line
    assert "'instruction', 'input', 'output'" in line
    assert not wd.exists()


@pytest.mark.parametrize("recipe, argv, expect", [
    (PPO, ["--deepspeed", "zero3", "--gpus", "8"], "objective 'ppo' runs without DeepSpeed"),
    (PPO, ["--gpus", "8"], "objective 'ppo' runs in one process, not 8"),
    (FULL_DPO, ["--deepspeed", "zero3", "--gpus", "8"], "needs a frozen reference copy"),
])
def test_estimate_refuses_what_train_refuses(recipe, argv, expect, capsys):
    capsys.readouterr()
    assert main(["estimate", recipe, *argv]) == 2
    assert expect in one_error(capsys)


def test_estimate_and_train_refuse_full_dpo_on_zero3_in_the_same_words(assets, tmp_path, capsys):
    model = f"pretrained_model_name_or_path={assets[0]}"
    capsys.readouterr()
    assert main(["estimate", FULL_DPO, "--deepspeed", "zero3", "--cfg-options", model]) == 2
    estimated = one_error(capsys)
    assert train(FULL_DPO, tmp_path / "wd", model, deepspeed="zero3") == 2
    assert one_error(capsys) == estimated and not (tmp_path / "wd").exists()


def test_estimate_refuses_a_causal_lm_as_ppo_reward_model(assets, capsys):
    capsys.readouterr()
    assert main(["estimate", PPO, "--cfg-options", f"objective.reward_model={assets[0]}"]) == 2
    assert "objective.reward_model" in one_error(capsys)
