"""The low-memory methods (issue 28) below the engine: each optimizer updates the weights it promises, its
state survives xtune's checkpoint format (a resumed optimizer takes the very step the original takes),
LISA / BAdam keep states for what trains now only, LoftQ fits the 4-bit rounding error, and the preflight
refuses what each method cannot combine with, one line each."""

from __future__ import annotations

import pytest

pytest.importorskip("peft")

import torch  # noqa: E402
from test_engine_fixtures import make_model, make_tokenizer  # noqa: E402

from xtune.methods.common import apply_method, resolve_method  # noqa: E402
from xtune.models.loading import load_model  # noqa: E402
from xtune.plugins import get_registry  # noqa: E402
from xtune.registry import import_object  # noqa: E402

OPTIMIZERS = {"lomo": {}, "adalomo": {}, "galore": {"rank": 4, "update_proj_gap": 2},
              "apollo": {"rank": 4, "update_proj_gap": 2}, "badam": {"switch_interval": 2},
              "lisa": {"activated_layers": 1, "step_interval": 2}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    tok = make_tokenizer(folder)
    make_model(folder, "llama", vocab_size=len(tok))
    return folder


def batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 300, (2, 16), generator=g)
    return dict(input_ids=ids, labels=ids.clone(), attention_mask=torch.ones_like(ids))


def built(folder, method: str, **settings):
    """(model, optimizer) as the engine builds them for `method` on the tiny Llama."""
    registry = get_registry()
    adapter = registry.model_adapters.get("llama2")
    model = load_model(dict(pretrained_model_name_or_path=str(folder)), adapter=adapter, registry=registry)
    entry, resolved = resolve_method(dict(type=method, **settings), registry)
    model = apply_method(model, dict(type=method, **settings), registry, adapter)
    optimizer = import_object(entry.optimizer)(model, dict(lr=1e-2), resolved, adapter)
    return model, optimizer


def step(model, optimizer, seed: int) -> None:
    loss = model(**batch(seed), use_cache=False).loss
    if hasattr(optimizer, "fused_backward"):  # LOMO: the update happens in backward
        optimizer.fused_backward(loss, optimizer.param_groups[0]["lr"])
    else:
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def through_store(state: dict, tmp_path) -> dict:
    """`state` written as an xtune checkpoint's optimizer entry and read back."""
    from xtune.checkpoint.store import read_store, write_store

    write_store({"meta": {}, "state_dict": {}, "optimizer": state}, tmp_path / "ckpt")
    return read_store(tmp_path / "ckpt")["optimizer"]


@pytest.mark.parametrize("method", sorted(OPTIMIZERS))
def test_optimizer_trains_and_resumes_exactly_from_a_checkpoint(tiny, tmp_path, method):
    torch.manual_seed(0)
    model, optimizer = built(tiny, method, **OPTIMIZERS[method])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for i in range(3):
        step(model, optimizer, i)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert changed, f"{method} updated nothing"
    saved_weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    saved_state = through_store(optimizer.state_dict(), tmp_path)
    step(model, optimizer, 3)  # the uninterrupted run's 4th step (crosses a BAdam / LISA switch)

    resumed, optimizer2 = built(tiny, method, **OPTIMIZERS[method])
    resumed.load_state_dict(saved_weights)
    optimizer2.load_state_dict(saved_state)
    step(resumed, optimizer2, 3)
    for name, p in resumed.named_parameters():
        assert torch.allclose(p, dict(model.named_parameters())[name], atol=1e-6), (method, name)


def test_lisa_and_badam_keep_states_of_what_trains_now_only(tiny):
    model, lisa = built(tiny, "lisa", activated_layers=1, step_interval=2)
    for i in range(3):
        step(model, lisa, i)
    layer_of = {id(p): n.split(".")[2] for n, p in model.named_parameters() if n.startswith("model.layers.")}
    with_state = {layer_of[id(p)] for p in lisa.state if id(p) in layer_of}
    training = {layer_of[id(p)] for p in model.parameters() if p.requires_grad and id(p) in layer_of}
    assert with_state == training and len(training) == 1
    assert model.model.embed_tokens.weight.requires_grad and model.model.embed_tokens.weight in lisa.state

    model, badam = built(tiny, "badam", switch_interval=2)
    step(model, badam, 0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(n.startswith("model.layers.0.") for n in trainable)
    assert sum(len(s) > 0 for s in badam.base_optimizer.state.values()) == len(trainable)


def test_galore_keeps_low_rank_moments_for_the_projections_only(tiny):
    model, galore = built(tiny, "galore", rank=2, update_proj_gap=50)
    step(model, galore, 0)
    names = {id(p): n for n, p in model.named_parameters()}
    for p, state in galore.state.items():
        name = names[id(p)]
        if name.endswith("proj.weight"):
            assert 2 in state["exp_avg"].shape and state["exp_avg"].numel() < p.numel(), name
        else:
            assert state["exp_avg"].shape == p.shape, name


def test_loftq_fits_the_4bit_rounding_error(tiny):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb
    from safetensors.torch import load_file

    registry = get_registry()
    adapter = registry.model_adapters.get("llama2")
    entry = registry.tuning_methods.get("qlora")
    quant = dict(entry.quantization)
    original = load_file(str(tiny / "model.safetensors"))

    def residuals(init: str) -> float:
        model = load_model(dict(pretrained_model_name_or_path=str(tiny), quantization=quant), adapter=adapter,
                           load_in_bits=4, method=entry, registry=registry)
        model = apply_method(model, dict(type="qlora", r=4, lora_alpha=8, init=init), registry, adapter)
        total = 0.0
        for name, module in model.named_modules():
            if "default" in getattr(module, "lora_A", {}) and hasattr(module.weight, "quant_state"):
                q = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state).float()
                a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
                delta = module.scaling["default"] * (b @ a).detach()
                w = original[name.removeprefix("base_model.model.") + ".weight"].float()
                total += float((w - q - delta).norm())
        return total

    plain, fitted = residuals("default"), residuals("loftq")
    assert fitted < 0.8 * plain, (plain, fitted)


def recipe_cfg(name: str, **changes):
    from xtune.recipe.load import load_recipe
    from xtune.recipe_files import resolve_recipe

    registry = get_registry()
    return load_recipe(resolve_recipe(name, registry), [f"{k}={v}" for k, v in changes.items()]), registry


@pytest.mark.parametrize("recipe,changes,kwargs,expected", [
    ("smollm2_135m_instruct_lomo_alpaca_e3", {"accumulative_counts": 4}, {}, "accumulative_counts=4"),
    ("smollm2_135m_instruct_lomo_alpaca_e3", {"max_norm": 1.0}, {}, "clip_grad"),
    ("smollm2_135m_instruct_adalomo_alpaca_e3", {}, {"processes": 2}, "2 processes"),
    ("smollm2_135m_instruct_lomo_alpaca_e3", {"optim_wrapper.dtype": "float16"}, {}, "fp16"),
    ("smollm2_135m_instruct_galore_alpaca_e3", {}, {"deepspeed": "zero2"}, "flat partitions"),
    ("smollm2_135m_instruct_badam_alpaca_e3", {}, {"processes": 2}, "DDP reduces a fixed set"),
    ("smollm2_135m_instruct_lisa_alpaca_e3", {}, {"deepspeed": "zero3"}, "--deepspeed zero3"),
    ("smollm2_135m_instruct_lora_alpaca_e3", {"method_cfg.init": "loftq"}, {}, "use qlora"),
    ("smollm2_135m_instruct_qlora_alpaca_e3", {"method_cfg.init": "pissa"}, {}, "rewrites the base weights"),
    ("smollm2_135m_instruct_lora_alpaca_e3", {"method_cfg.init": "pisa"}, {}, "'pisa' is not one of"),
])
def test_preflight_refuses_what_a_method_cannot_combine_with(recipe, changes, kwargs, expected):
    from xtune.engine.objective_setup import run_problems

    cfg, registry = recipe_cfg(recipe, **changes)
    kwargs.setdefault("deepspeed", None)
    problems = run_problems(cfg, registry, **kwargs)
    assert len(problems) == 1 and expected in problems[0], problems
    clean, _ = recipe_cfg(recipe)
    assert run_problems(clean, registry, deepspeed=None) == []


def test_every_new_method_has_recipes_and_an_estimate():
    from xtune.estimate.architecture import find_architecture
    from xtune.estimate.memory import Plan, estimate

    registry = get_registry()
    names = [r.name for r in registry.recipes]
    arch = find_architecture("HuggingFaceTB/SmolLM2-135M-Instruct", registry)
    full = estimate(arch, Plan(method="full", device="cpu", weight_bytes=4, compute_bytes=4, seq_len=512))
    for method in ("lomo", "adalomo", "galore", "apollo", "badam", "lisa", "lora_pissa", "qlora_loftq"):
        assert sum(f"_{method}_alpaca_e3" in n for n in names) >= 10, method
    for method in ("lomo", "adalomo", "galore", "apollo", "badam", "lisa"):
        plan = Plan(method=method, device="cpu", weight_bytes=4, compute_bytes=4, seq_len=512, method_rank=16,
                    activated_layers=2)
        est = estimate(arch, plan)
        states = est.components["gradients"] + est.components["optimizer states"]
        assert states < 0.6 * (full.components["gradients"] + full.components["optimizer states"]), method
        assert est.components["weights"] == full.components["weights"]
