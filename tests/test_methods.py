"""Every tuning method on tiny Llama and Qwen2 models: a few optimizer steps train exactly the parameters
the method promises, and the QLoRA CPU fix keeps gradients right after an eval pass."""

from __future__ import annotations

import pytest

pytest.importorskip("peft")

import torch  # noqa: E402
from test_engine_fixtures import make_model, make_tokenizer  # noqa: E402

from xtune.errors import ConfigError  # noqa: E402
from xtune.methods.common import (
    apply_method,  # noqa: E402
    count_parameters,  # noqa: E402
)
from xtune.models.loading import load_model  # noqa: E402
from xtune.plugins import get_registry  # noqa: E402

QLORA = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
             bnb_4bit_compute_dtype="auto")


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    out = {}
    for arch in ("llama", "qwen2"):
        folder = tmp_path_factory.mktemp(arch)
        tok = make_tokenizer(folder)
        make_model(folder, arch, vocab_size=len(tok))
        out[arch] = folder
    return out


def build(folder, method: str, arch: str = "llama", **settings):
    registry = get_registry()
    entry = registry.tuning_methods.get(method)
    adapter = registry.model_adapters.get("llama2" if arch == "llama" else "qwen2")
    model = load_model(dict(pretrained_model_name_or_path=str(folder),
                            quantization=QLORA if entry.load_in_bits else None),
                       adapter=adapter, load_in_bits=entry.load_in_bits, registry=get_registry())
    return apply_method(model, dict(type=method, **settings), registry, adapter)


def batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 300, (2, 24), generator=g)
    return dict(input_ids=ids, labels=ids.clone(), attention_mask=torch.ones_like(ids))


def train_steps(model, steps: int = 3):
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2)
    losses = []
    for i in range(steps):
        loss = model(**batch(i % 2), use_cache=False).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


CASES = [
    ("full", "llama", {}), ("freeze", "llama", {"trainable_layers": 1}), ("lora", "llama", {"r": 4}),
    ("lora", "qwen2", {"r": 4}), ("dora", "llama", {"r": 4}), ("qlora", "llama", {"r": 4}),
    ("qlora", "qwen2", {"r": 4}), ("prefix_tuning", "llama", {"num_virtual_tokens": 4}),
    ("prompt_tuning", "llama", {"num_virtual_tokens": 4}),
    ("p_tuning", "llama", {"num_virtual_tokens": 4, "encoder_hidden_size": 16}),
    ("ia3", "llama", {}), ("bitfit", "qwen2", {}),
]


@pytest.mark.parametrize("method,arch,settings", CASES, ids=[f"{m}-{a}" for m, a, _ in CASES])
def test_method_trains_only_its_parameters(tiny_dirs, method, arch, settings):
    model = build(tiny_dirs[arch], method, arch, **settings)
    trainable, total = count_parameters(model)
    assert 0 < trainable <= total
    if method != "full":
        assert trainable < total
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.dtype.is_floating_point}
    losses = train_steps(model)
    assert all(torch.isfinite(torch.tensor(losses)))
    changed = {n for n,
               p in model.named_parameters() if n in before and not torch.equal(before[n], p.detach())}
    requires = {n for n, p in model.named_parameters() if p.requires_grad}
    assert changed, "no parameter changed"
    assert changed <= requires, f"frozen parameters changed: {sorted(changed - requires)[:3]}"


def test_freeze_trains_last_layer_only(tiny_dirs):
    model = build(tiny_dirs["llama"], "freeze", trainable_layers=1)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names and all(n.startswith("model.layers.1.") for n in names)


def test_freeze_by_module_pattern(tiny_dirs):
    model = build(tiny_dirs["llama"], "freeze", trainable_layers=0, trainable_modules=["lm_head"])
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"lm_head.weight"}


def test_lora_target_modules_come_from_the_adapter(tiny_dirs):
    model = build(tiny_dirs["llama"], "lora", r=4)
    targets = model.peft_config["default"].target_modules  # peft expands 'all-linear' to module names
    assert {t.rsplit(".", 1)[-1] for t in targets} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                       "up_proj", "down_proj"}


def test_dora_sets_use_dora(tiny_dirs):
    model = build(tiny_dirs["llama"], "dora", r=4)
    assert model.peft_config["default"].use_dora is True


def test_bitfit_on_a_model_without_biases_is_a_config_error(tiny_dirs):
    with pytest.raises(ConfigError, match="bitfit.*has none"):
        build(tiny_dirs["llama"], "bitfit")


def test_unknown_method_setting_names_the_closest(tiny_dirs):
    with pytest.raises(ConfigError, match="'lora_alfa'.*lora_alpha"):
        build(tiny_dirs["llama"], "lora", lora_alfa=8)


def test_lora_settings_are_dropped_when_a_recipe_switches_to_full(tiny_dirs):
    model = build(tiny_dirs["llama"], "full", r=64, lora_alpha=16, target_modules="auto")
    trainable, total = count_parameters(model)
    assert trainable == total


def test_qlora_gradients_survive_an_eval_forward(tiny_dirs):
    """bitsandbytes repacks 4-bit weights on the first no-grad forward on AVX512-BF16 CPUs; our fix keeps
    the LoRA gradients non-zero and identical before and after such a pass."""
    import bitsandbytes as bnb

    model = build(tiny_dirs["llama"], "qlora", r=4, lora_dropout=0.0)  # no dropout: identical passes
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and all(m.support_avx512bf16_for_cpu is False for m in layers)
    model.train()

    def grads():
        model.zero_grad()
        model(**batch(), use_cache=False).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    train_steps(model, 1)  # lora_B starts at zero, which zeroes lora_A's gradient; one step makes both live
    first = grads()
    for part in ("lora_A", "lora_B"):
        assert all(g.abs().sum() > 0 for n, g in first.items() if part in n), part
    model.eval()
    with torch.no_grad():
        model(**batch(1), use_cache=False)
    model.train()
    second = grads()
    for name, g in first.items():
        torch.testing.assert_close(second[name], g, rtol=0, atol=0, msg=name)


def test_lora_dropout_on_fused_experts_is_a_config_error():
    """Mixtral's experts are fused 3-D tensors in transformers 5; peft adapts them without dropout, so a
    recipe with lora_dropout > 0 gets one error in its own terms (the generated MoE recipes set 0)."""
    from transformers import MixtralConfig, MixtralForCausalLM

    config = MixtralConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=1, num_local_experts=2,
                           num_experts_per_tok=1)
    with pytest.raises(ConfigError, match="cannot use dropout"):
        apply_method(MixtralForCausalLM(config), {"type": "lora", "lora_dropout": 0.1}, get_registry())
    model = apply_method(MixtralForCausalLM(config), {"type": "lora", "lora_dropout": 0.0}, get_registry())
    assert any("experts" in name for name, p in model.named_parameters() if p.requires_grad)
