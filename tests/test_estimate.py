"""`xtune estimate` and the memory model: figures for every built-in model, parameter counts checked
against transformers' own models, activations against what autograd really keeps, DeepSpeed and the
other switches, the CLI (offline, no torch), and the preflight warning of `xtune train`.

The peak against real training runs is measured by `tools/bench.py estimate` (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace

import pytest
from conftest import REPO, shared_path

from xtune.cli.main import main
from xtune.errors import UsageError
from xtune.estimate.architecture import Architecture, find_architecture, from_config_json
from xtune.estimate.memory import GiB, Plan, activation_bytes, estimate, layer_activation_bytes
from xtune.plugins import get_registry

QLORA_7B = "internlm2_chat_7b_qlora_oasst1_e3"


def test_every_built_in_model_has_figures_that_add_up_to_its_size():
    registry = get_registry()
    for model in registry.models:
        if model.plugin != "xtune" or registry.model_adapters.get(model.family).model_kind != "llm":
            continue  # vision-language models and encoders carry no figures yet (see the test below)
        assert model.hidden_size and model.num_layers and model.vocab_size, f"{model.name} has no figures"
        params = find_architecture(model.hub_id, registry).params / 1e9
        assert abs(params / model.params_b - 1) < 0.03, (model.name, params, model.params_b)


# The parameter count of each layout, checked against the model transformers builds from the same config.
CONFIGS = {
    "llama": dict(num_attention_heads=4, num_key_value_heads=2),
    "qwen3": dict(num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True),
    "gemma2": dict(num_attention_heads=2, num_key_value_heads=1, head_dim=64),
    "mixtral": dict(num_attention_heads=4, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2),
    "deepseek_v2": dict(num_attention_heads=4, num_key_value_heads=4, n_routed_experts=4, n_shared_experts=1,
                        num_experts_per_tok=2, moe_intermediate_size=32, first_k_dense_replace=1,
                        kv_lora_rank=16, q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=16,
                        v_head_dim=16, n_group=1, topk_group=1),
}


@pytest.mark.parametrize("model_type", sorted(CONFIGS))
def test_parameter_counts_equal_the_models_transformers_builds(model_type):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, vocab_size=1000, hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=3, **CONFIGS[model_type])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    real = sum(p.numel() for p in model.parameters())
    ours = from_config_json(config.to_dict(), "test").params
    assert abs(ours / real - 1) < 0.01, (model_type, ours, real)


def test_figures_come_from_a_local_folder_or_the_hub_cache_and_nothing_else(tmp_path, monkeypatch):
    registry = get_registry()
    tiny = shared_path("reference", "models", "llama2_tiny_random", "hf_converted_DERIVED")
    arch = find_architecture(str(tiny), registry)
    assert (arch.hidden_size, arch.head_dim, arch.vocab_size) == (8, 4, 32000)
    assert "config.json" in arch.source
    snapshot = tmp_path / "hub" / "models--someone--tiny" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text((tiny / "config.json").read_text())
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert find_architecture("someone/tiny", registry).vocab_size == 32000
    with pytest.raises(UsageError, match="no architecture figures for model 'someone/else'"):
        find_architecture("someone/else", registry)


# ------------------------------------------------------------------------------ activations, truth
_SAVED_BYTES = r"""
import json, sys
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM


def saved_bytes(model, ids, autocast):
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def keep(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            seen[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            model(input_ids=ids, labels=ids)
    return sum(seen.values())


out = {}
for method, weights in (("full", "bfloat16"), ("lora", "bfloat16"), ("full", "float32"), ("lora", "float32")):
    dtype = getattr(torch, weights)
    kept = {}
    for layers in (1, 3):
        config = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=352, num_hidden_layers=layers,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(dtype).train()
        model.config.use_cache = False
        if method == "lora":
            model = get_peft_model(model, LoraConfig(r=8, lora_dropout=0.1, target_modules="all-linear"))
        kept[layers] = saved_bytes(model, torch.randint(0, 512, (1, 128)), dtype == torch.float32)
    layer0 = [p for n, p in model.named_parameters() if "layers.0." in n and "lora" not in n and p.dim() == 2]
    copies = 2 * sum(p.numel() for p in layer0) if dtype == torch.float32 else 0
    out[f"{method} {weights}"] = (kept[3] - kept[1]) / 2 - copies
print(json.dumps({"config": config.to_dict(), "kept": out}))
"""


@pytest.fixture(scope="module")
def saved_per_layer():
    """What autograd keeps for one Llama layer (the difference between a 3- and a 1-layer model, so
    embedding, head and loss cancel; autocast's weight copies are their own term), for full and LoRA in
    bf16 and in fp32 under bf16 autocast. Measured in a fresh interpreter: nothing another test set up
    in this process may change what the forward pass keeps."""
    done = subprocess.run([sys.executable, "-c", _SAVED_BYTES], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("method, weights", [("full", "bfloat16"), ("lora", "bfloat16"), ("full", "float32"),
                                             ("lora", "float32")])
@pytest.mark.integration
def test_layer_activations_match_what_autograd_keeps(saved_per_layer, method, weights):
    arch = from_config_json(saved_per_layer["config"], "test")
    plan = Plan(method=method, lora_rank=8 if method == "lora" else 0, lora_dropout=0.1,
                weight_bytes=4 if weights == "float32" else 2, compute_bytes=2)
    predicted = layer_activation_bytes(arch, plan)[0] * 128
    measured = saved_per_layer["kept"][f"{method} {weights}"]
    assert abs(predicted / measured - 1) < 0.15, (method, weights, predicted, measured)


# ------------------------------------------------------------------------------------ the model
def _arch() -> Architecture:
    return find_architecture("meta-llama/Llama-2-7b-hf", get_registry())


def test_full_tuning_is_near_the_rule_of_thumb_and_lora_near_the_weights():
    arch = _arch()
    full = estimate(arch, Plan(method="full", seq_len=512, gradient_checkpointing=True))
    lora = estimate(arch, Plan(method="lora", lora_rank=16, seq_len=512, gradient_checkpointing=True))
    assert 0.6 < full.total / full.rule_of_thumb < 1.2
    assert 1.0 < lora.total / lora.rule_of_thumb < 1.3  # "slightly above the weights"
    qlora = estimate(arch, Plan(method="qlora", lora_rank=16, load_in_bits=4, seq_len=512,
                                gradient_checkpointing=True))
    assert qlora.components["weights"] < 0.45 * lora.components["weights"]


def test_checkpointing_eager_attention_and_deepspeed_move_the_right_terms():
    arch = _arch()
    plan = Plan(method="full", seq_len=4096)
    base = estimate(arch, plan)
    ckpt = estimate(arch, Plan(method="full", seq_len=4096, gradient_checkpointing=True))
    assert ckpt.components["activations"] < base.components["activations"] / 10
    assert ckpt.activations_other == base.components["activations"]
    eager = activation_bytes(arch, Plan(method="full", seq_len=4096, attention="eager"), False)[0]
    assert eager - base.components["activations"] == pytest.approx(base.eager_attention_bytes)
    z2 = estimate(arch, Plan(method="full", seq_len=4096, deepspeed_stage=2, num_devices=8))
    z3 = estimate(arch, Plan(method="full", seq_len=4096, deepspeed_stage=3, num_devices=8))
    z3_off = estimate(arch, Plan(method="full", seq_len=4096, deepspeed_stage=3, num_devices=8,
                                 offload_optimizer=True, offload_params=True))
    assert z2.components["optimizer states"] == pytest.approx(arch.params * 12 / 8)
    assert z2.components["weights"] == base.components["weights"] > z3.components["weights"]
    assert z3_off.components["optimizer states"] == 0 and z3_off.offloaded > 0
    assert base.total > z2.total > z3.total > z3_off.total


# ------------------------------------------------------------------------------------------ CLI
@pytest.mark.integration
def test_estimate_a_7b_qlora_recipe_offline_without_torch():
    code = (f"import sys; from xtune.cli.main import main; rc = main(['estimate', {QLORA_7B!r}]); "
            "print('HEAVY', sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules)); "
            "sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "HEAVY []" in out and "7.74 B parameters" in out and "NF4" in out
    for row in ("weights", "gradients", "optimizer states", "activations", "peak", "rule of thumb"):
        assert f"  {row}" in out


def test_estimate_json_and_deepspeed_across_gpus(capsys):
    assert main(["estimate", QLORA_7B, "--json", "--cfg-options", "max_length=4096"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["plan"]["seq_len"] == 4096 and one["bytes"]["peak"] > 5 * GiB
    argv = ["estimate", "llama2_7b_full_alpaca_e3", "--json", "--deepspeed", "zero3", "--gpus", "8"]
    assert main(argv) == 0
    z3 = json.loads(capsys.readouterr().out)
    assert z3["plan"]["deepspeed_stage"] == 3 and z3["plan"]["num_devices"] == 8


@pytest.mark.parametrize("argv, expect", [
    (["estimate", "no_such_recipe"], "unknown recipe"),
    (["estimate", QLORA_7B, "--deepspeed", "zero9"], "unknown deepspeed preset 'zero9'"),
    (["estimate", QLORA_7B, "--cfg-options", "pretrained_model_name_or_path=someone/unknown"],
     "no architecture figures"),
])
def test_estimate_mistakes_are_one_error_line(argv, expect, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: ") and expect in err[0]


def test_train_preflight_warns_when_the_estimate_exceeds_free_memory(tmp_path, monkeypatch, capsys):
    from test_export_helpers import load_recipe_cfg, tiny_model_dir

    from xtune.engine.checks import preflight
    from xtune.estimate import devices, memory_warning
    from xtune.plan import resolve_plan

    cfg = load_recipe_cfg(tiny_model_dir(tmp_path / "base"), data_path=str(tmp_path / "data.json"))
    (tmp_path / "data.json").write_text("[]")
    monkeypatch.setattr(devices, "free_memory", lambda: ("cpu", 10 * 2**20, 1))
    message = memory_warning(cfg, get_registry(), resolve_plan(cfg, get_registry()))
    assert message.startswith("Warning: the estimated peak") and "0.0 GiB RAM available" in message
    preflight(cfg, get_registry(), work_dir=tmp_path / "wd")
    assert "Warning: the estimated peak" in capsys.readouterr().err
    monkeypatch.setattr(devices, "free_memory", lambda: ("cpu", 10**15, 1))
    assert memory_warning(cfg, get_registry(), resolve_plan(cfg, get_registry())) is None


def test_a_vision_language_model_is_named_as_having_no_figures(capsys):
    from xtune.cli.main import main

    assert main(["estimate", "qwen2_vl_2b_instruct_lora_llava_instruct_e1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: no architecture figures") and "registers it" in err[0]


def _plan(name: str, *options: str):
    from xtune.estimate.settings import plan_for_recipe
    from xtune.recipe import load_recipe
    from xtune.recipe_files import resolve_recipe

    registry = get_registry()
    cfg = load_recipe(resolve_recipe(name, registry), list(options))
    from xtune.plan import resolve_plan

    return plan_for_recipe(cfg, registry, resolve_plan(cfg, registry))


def test_preference_objectives_count_both_sequences_and_their_frozen_models():
    """Pairs are twice the tokens of SFT at the same max_length; a full-weight DPO keeps a reference copy
    (adapters switch theirs off, precomputed log-probs need none); PPO adds its reward model and the
    generated tokens; a reward model computes no vocabulary logits."""
    sft_arch, sft = _plan("smollm2_135m_instruct_full_alpaca_e3", "max_length=1024")
    _, dpo = _plan("smollm2_135m_instruct_full_dpo_ultrafeedback_e1", "max_length=1024")
    assert dpo.batch_size * dpo.seq_len == 2 * sft.batch_size * sft.seq_len
    assert dpo.frozen_params == sft_arch.params and sft.frozen_params == 0
    _, unpacked = _plan("smollm2_135m_instruct_full_dpo_ultrafeedback_e1", "max_length=1024",
                        "pack_to_max_length=False")
    assert (unpacked.batch_size, unpacked.seq_len) == (2 * sft.batch_size, 1024)
    _, pre = _plan("smollm2_135m_instruct_full_dpo_ultrafeedback_e1",
                   "objective.precompute_ref_log_probs=True")
    _, lora = _plan("smollm2_135m_instruct_lora_dpo_ultrafeedback_e1")
    assert pre.frozen_params == 0 and lora.frozen_params == 0
    arch, dpo_full = _plan("smollm2_135m_instruct_full_dpo_ultrafeedback_e1")
    full_sft = estimate(arch, sft)
    full_dpo = estimate(arch, dpo_full)
    assert full_dpo.components["frozen models"] == arch.params * dpo_full.weight_bytes
    assert full_dpo.total > full_sft.total
    _, ppo = _plan("smollm2_135m_instruct_lora_ppo_ultrafeedback_e1", "objective.max_new_tokens=64")
    assert ppo.seq_len == 1024 + 64 and ppo.frozen_params == arch.params  # the reward model, not trained yet
    _, reward = _plan("smollm2_135m_instruct_lora_reward_ultrafeedback_e1")
    assert reward.score_head and estimate(arch, reward).components["logits and loss"] < GiB / 100


def test_a_llava_composition_counts_its_vision_encoder_and_projector():
    """The encoder's weights (frozen) and LLaVA's two-layer projector (trained) beside the language model:
    in the 'pretrain' stage the projector is all that trains."""
    arch, plan = _plan("llava_llama3_1_8b_instruct_clip_vit_large_p14_336_freeze_pretrain_llava_pretrain_e1")
    h = arch.hidden_size
    assert plan.vision_params == 303_500_000  # CLIP ViT-L/14-336's vision tower, as the registry records it
    assert plan.projector_params == 1024 * h + h * h + 2 * h == plan.vision_trained
    est = estimate(arch, plan)
    assert est.trainable == plan.projector_params
    assert est.components["weights"] - estimate(arch, replace(plan, vision_params=0, projector_params=0,
                                                               vision_trained=0)).components["weights"] \
        == (plan.vision_params + plan.projector_params) * plan.weight_bytes
    _, unfrozen = _plan("llava_llama3_1_8b_instruct_clip_vit_large_p14_336_lora_finetune_llava_instruct_e1",
                        "vlm.freeze_vision=False")
    assert unfrozen.vision_trained == unfrozen.vision_params + unfrozen.projector_params


def test_grpo_counts_the_group_its_kv_cache_and_a_reference_only_with_beta():
    """GRPO's rows are batch_size x num_generations sequences of prompt + max_completion_length tokens; their
    KV cache is held while the group is sampled and freed before the update, so the peak counts the larger
    of the two; logits are computed at the completions only; the reference is a frozen copy only for full
    weights with a KL term (beta > 0)."""
    from xtune.estimate.objective import kv_cache_bytes

    recipe = "smollm2_135m_instruct_lora_grpo_gsm8k_e1"
    arch, plan = _plan(recipe, "batch_size=2", "objective.num_generations=6",
                       "objective.max_completion_length=128", "max_length=256")
    assert (plan.batch_size, plan.seq_len, plan.kv_cache, plan.frozen_params) == (12, 384, True, 0)
    assert plan.labelled_share == 128 / 384
    per_token = arch.num_layers * arch.num_kv_heads * 2 * arch.head_dim * plan.compute_bytes
    est = estimate(arch, plan)
    assert est.components["KV cache (generation)"] == kv_cache_bytes(arch, plan) == 12 * 384 * per_token
    assert est.total == estimate(arch, replace(plan, kv_cache=False)).total  # the update needs more
    assert est.components["frozen models"] == 0
    # full multi-head attention (a cache as wide as the residual stream, twice), a checkpointed update and
    # few completion tokens: here the cache sets the peak
    mha = Architecture(hidden_size=512, num_layers=32, num_heads=8, num_kv_heads=8, head_dim=64,
                       intermediate_size=1024, vocab_size=1000)
    heavy = estimate(mha, Plan(method="lora", lora_rank=8, batch_size=64, seq_len=512, kv_cache=True,
                               gradient_checkpointing=True, labelled_share=0.05))
    h = heavy.components
    assert h["KV cache (generation)"] > max(h["activations"] + h["logits and loss"], h["gradients"])
    assert heavy.total == h["weights"] + h["optimizer states"] + h["KV cache (generation)"]
    _, with_kl = _plan(recipe, "method=full", "objective.beta=0.04")
    _, without = _plan(recipe, "method=full")
    _, lora_kl = _plan(recipe, "objective.beta=0.04")
    assert with_kl.frozen_params == arch.params and without.frozen_params == lora_kl.frozen_params == 0


def test_estimate_of_a_grpo_recipe_shows_the_generation(capsys):
    assert main(["estimate", "qwen2_5_7b_instruct_lora_grpo_gsm8k_e1"]) == 0
    out = capsys.readouterr().out
    assert "objective grpo" in out and "KV cache (generation)" in out and "micro-batch 32 x 768" in out
