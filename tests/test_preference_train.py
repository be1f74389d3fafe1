"""Preference recipes end to end on tiny models: DPO (QLoRA, LoRA with a precomputed reference, full with a
frozen copy), ORPO, SimPO, KTO, a reward model with `xtune reward`, and PPO on a toy reward that must rise;
packed DPO equals unpacked on the pipeline's own rows; exports load with plain transformers / peft."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_engine_fixtures import WORDS, make_assets

from xtune.cli.main import main
from xtune.plugins import get_registry

pytestmark = pytest.mark.integration


def pairs(n: int = 48, liked: str = "cat") -> list[dict]:
    """Pairs whose chosen answer says `liked` and whose rejected one does not. Runs stay within one pass over
    them: mmengine sleeps 2 s each time it restarts a dataloader."""
    out = []
    for i in range(n):
        a, b = WORDS[i % len(WORDS)], WORDS[(5 * i + 3) % len(WORDS)]
        good = " ".join([liked] + [WORDS[(i + k) % len(WORDS)] for k in range(2 + i % 4)] + [liked])
        bad = " ".join(WORDS[(2 * i + k + 7) % len(WORDS)] for k in range(3 + i % 3)).replace(liked, "dog")
        out.append({"conversations": [{"from": "human", "value": f"write {a} {b}"}],
                    "chosen": {"from": "gpt", "value": good}, "rejected": {"from": "gpt", "value": bad}})
    return out


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("pref")
    model_dir, _ = make_assets(root)
    data = root / "pairs.json"
    data.write_text(json.dumps(pairs()), encoding="utf-8")
    return model_dir, data


def options(model_dir, data, **extra) -> list[str]:
    values = dict(pretrained_model_name_or_path=model_dir, data_path=data, dataset_map="sharegpt_preference",
                  max_length=48, batch_size=2, accumulative_counts=1, max_steps=3, save_steps=3, lr=1e-3,
                  evaluation_inputs="[]", log_interval=1, seed=1, warmup_ratio=0.0,
                  **{"optim_wrapper.dtype": "float32"})
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def train(recipe, work_dir, opts) -> int:
    return main(["train", recipe, "--work-dir", str(work_dir), "--cfg-options", *opts])


def scalars(work_dir) -> list[dict]:
    found = list(Path(work_dir).glob("*/vis_data/scalars.json"))
    return [json.loads(line) for line in found[0].read_text().splitlines()]


def test_dpo_qlora_run_logs_trl_metrics_and_exports_an_adapter(assets, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    wd = tmp_path / "wd"
    assert train("llama2_7b_chat_qlora_dpo_ultrafeedback_e1", wd,
                 options(*assets, **{"model.gradient_checkpointing": True})) == 0
    rows = scalars(wd)
    assert {"loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
            "logps/chosen", "logps/rejected"} <= set(rows[-1])
    assert (wd / "hf" / "adapter_config.json").is_file()
    assert json.loads((wd / "hf" / "xtune_info.json").read_text())["objective"] == "dpo"
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(assets[0]), str(wd / "hf"))
    merged = tmp_path / "merged"  # the policy is an ordinary fine-tune: merge it and chat with it
    assert main(["convert", "merge", str(assets[0]), str(wd / "hf"), str(merged), "--dtype", "float32"]) == 0
    assert main(["chat", str(merged), "--prompt", "write the cat", "--max-new-tokens", "4",
                 "--temperature", "0"]) == 0


def test_log_dataset_marks_chosen_and_rejected(assets, capsys):
    opts = options(*assets, prompt_template="llama2_chat")
    assert main(["log-dataset", "llama2_7b_chat_qlora_dpo_ultrafeedback_e1", "-n", "2", "--cfg-options",
                 *opts]) == 0
    out = capsys.readouterr().out
    assert "sample 0 (chosen)" in out and "sample 1 (rejected)" in out and "[[" in out


def test_packed_dpo_loss_equals_unpacked_on_pipeline_rows(assets, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xtune.data.pipeline import build_train_dataset
    from xtune.data.preference_collate import collator_for
    from xtune.objectives.dpo import DPO
    from xtune.objectives.reference import Reference

    model_dir, data = assets
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    reference = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    policy = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").eval()
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    losses = {}
    for packed in (False, True):
        cfg = {"dataset_map": "sharegpt_preference", "data_path": str(data), "rows": "pairs",
               "prompt_template": "llama2_chat", "max_length": 48, "pack_to_max_length": packed}
        rows = build_train_dataset(cfg, tokenizer, use_cache=False, registry=get_registry())
        batch = collator_for(cfg, tokenizer)([rows[i] for i in range(len(rows))])
        with torch.no_grad():
            losses[packed] = DPO(beta=0.5).loss(policy, batch, Reference("copy", reference))
        assert packed or len(rows) == 48
    assert len(rows) < 48
    for key in ("loss", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert abs(float(losses[True][key]) - float(losses[False][key])) < 1e-5, key


@pytest.mark.parametrize("recipe, extra", [
    ("smollm2_135m_instruct_lora_dpo_ultrafeedback_e1", {"objective.precompute_ref_log_probs": True}),
    ("smollm2_135m_instruct_full_dpo_ultrafeedback_e1", {"objective.loss_type": "ipo"}),
    ("llama2_7b_chat_lora_orpo_ultrafeedback_e1", {}),
    ("smollm2_135m_instruct_lora_simpo_ultrafeedback_e1", {}),
    ("smollm2_135m_instruct_lora_kto_kto_mix_e1", {}),  # KTO on pairs: each side is one judged answer
    ("smollm2_135m_instruct_lora_dpo_ultrafeedback_e1", {"method": "dora"}),  # any method, any objective
    ("smollm2_135m_instruct_full_dpo_ultrafeedback_e1", {"method": "freeze",
                                                          "method_cfg.trainable_layers": 1}),
])
def test_every_objective_trains_a_few_steps(assets, tmp_path, recipe, extra):
    wd = tmp_path / "wd"
    extra = {"prompt_template": "llama2_chat", "export_hf": False, "method_cfg.r": 4, **extra}
    if "_full_" in recipe:
        del extra["method_cfg.r"]
    assert train(recipe, wd, options(*assets, **extra)) == 0
    history = json.loads((wd / "loss_history.json").read_text())["train"]
    assert len(history) == 3 and all(h["loss"] == h["loss"] for h in history)
    log = "\n".join(p.read_text() for p in wd.glob("*/*.log"))
    if "_dpo_" in recipe:
        expected = ("precomputed" if extra.get("objective.precompute_ref_log_probs") else
                    "adapters disabled" if "_lora_" in recipe else "a frozen copy")
        assert expected in log, expected
    if "_kto_" in recipe:
        assert "kl:" in log


@pytest.fixture(scope="module")
def reward_model(assets, tmp_path_factory):
    """A reward model of the tiny Llama trained to prefer answers that say 'cat'."""
    wd = tmp_path_factory.mktemp("reward") / "wd"
    recipe = "llama2_7b_chat_qlora_reward_ultrafeedback_e1"
    opts = options(*assets, **{"method": "lora", "model.quantization": None, "max_steps": 20, "lr": 2e-2,
                               "method_cfg.r": 8})
    assert train(recipe, wd, opts) == 0
    return wd


def test_reward_model_exports_a_sequence_classifier_and_scores(reward_model, assets, capsys):
    from peft import AutoPeftModelForSequenceClassification

    hf = reward_model / "hf"
    assert json.loads((hf / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    AutoPeftModelForSequenceClassification.from_pretrained(str(hf), num_labels=1)
    acc = [r["rewards/accuracies"] for r in scalars(reward_model) if "rewards/accuracies" in r]
    assert sum(acc[-5:]) / 5 > 0.8, acc
    capsys.readouterr()
    assert main(["reward", str(hf), "--prompt", "write the park", "--response", "cat the dog ran cat",
                 "--response", "dog ran in the park", "--json"]) == 0
    scores = [r["score"] for r in json.loads(capsys.readouterr().out)]
    assert scores[0] > scores[1]


def test_a_reward_model_is_refused_where_text_is_generated(reward_model, assets, tmp_path, capsys):
    """Loaded as a causal LM its score head would be dropped silently: chat, merge and GGUF export refuse
    it in one line and write nothing."""
    hf, base = reward_model / "hf", str(assets[0])
    capsys.readouterr()
    for argv in (["chat", base, "--adapter", str(hf), "--prompt", "hi"],
                 ["convert", "merge", base, str(hf), str(tmp_path / "merged")],
                 ["convert", "hf_to_gguf", str(hf), str(tmp_path / "model.gguf")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "is a reward model" in err[0] and "xtune reward" in err[0], (argv, err)
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def sft_policy(assets, tmp_path_factory):
    """The chain's first step: the tiny Llama fine-tuned (full SFT) on both answers of every pair, so it says
    'cat ...' about half of the time."""
    model_dir, data = assets
    root = tmp_path_factory.mktemp("sft")
    records = [{"instruction": p["conversations"][0]["value"], "output": p[side]["value"]}
               for p in json.loads(data.read_text()) for side in ("chosen", "rejected")] * 10
    (root / "sft.json").write_text(json.dumps(records), encoding="utf-8")
    opts = [f"pretrained_model_name_or_path={model_dir}", f"data_path={root / 'sft.json'}", "max_length=48",
            "batch_size=16", "accumulative_counts=1", "max_steps=50", "save_steps=50", "lr=1e-2",
            "evaluation_inputs=[]", "warmup_ratio=0.0", "prompt_template=llama2_chat", "log_interval=50",
            "optim_wrapper.dtype=float32"]
    assert main(["train", "llama2_7b_full_alpaca_e3", "--work-dir", str(root / "wd"), "--cfg-options",
                 *opts]) == 0
    return root / "wd" / "hf"


def test_ppo_raises_the_toy_reward(sft_policy, reward_model, assets, tmp_path):
    """RLHF on the toy reward (answers that say 'cat'): the score of the policy's own answers rises."""
    wd, prompts = tmp_path / "wd", tmp_path / "prompts.json"
    prompts.write_text(json.dumps(json.loads(assets[1].read_text()) * 4), encoding="utf-8")
    recipe = "smollm2_135m_instruct_lora_ppo_ultrafeedback_e1"
    opts = options(sft_policy, prompts, **{"prompt_template": "llama2_chat", "objective.reward_model":
                                           reward_model / "hf", "max_steps": 16, "batch_size": 12, "lr": 5e-3,
                                           "objective.max_new_tokens": 6, "objective.kl_coef": 0.01,
                                           "method_cfg.r": 8, "save_steps": 16})
    assert train(recipe, wd, opts) == 0
    scores = [r["ppo/score"] for r in scalars(wd) if "ppo/score" in r]
    assert len(scores) == 16  # measured over seeds 1-3: the mean rises by 1.6 to 2.8 (scores span -4 to 4)
    assert sum(scores[-4:]) / 4 > sum(scores[:4]) / 4 + 1.0, scores
    assert (wd / "hf" / "adapter_config.json").is_file()
    out = tmp_path / "converted"
    assert main(["convert", "pth_to_hf", recipe, str(wd / "iter_16.pth"), str(out), "--cfg-options",
                 *opts]) == 0  # the value head stays behind
