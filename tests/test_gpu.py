"""GPU checks (opt-in: `pytest -m gpu`; tools/gpu_check.sh runs them on a lent H100/H200): bf16 chosen on
CUDA, packed rows isolated under FlashAttention-2's varlen path as under sdpa, QLoRA training on CUDA, and
a short `xtune train` (plain and under DeepSpeed ZeRO-2) on the GPU."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def tiny_llama(tmp_path, attn="sdpa"):
    from test_engine_fixtures import make_assets
    from transformers import AutoModelForCausalLM

    model_dir, data = make_assets(tmp_path)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation=attn)
    return model.to("cuda").eval(), model_dir, data


def test_precision_auto_is_bf16_on_a_gpu_that_has_it():
    from xtune.hardware import choose_precision

    expected = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    assert choose_precision("auto").name == expected


@pytest.mark.parametrize("attn", ["sdpa", "flash_attention_2"])
def test_packed_rows_do_not_attend_across_samples(tmp_path, attn):
    """Two samples packed in one row (position_ids restarting) give each sample's own logits."""
    if attn == "flash_attention_2":
        pytest.importorskip("flash_attn")
    model, _, _ = tiny_llama(tmp_path, attn)
    a, b = torch.randint(5, 300, (1, 12), device="cuda"), torch.randint(5, 300, (1, 9), device="cuda")
    packed = torch.cat([a, b], dim=1)
    positions = torch.cat([torch.arange(12), torch.arange(9)]).unsqueeze(0).to("cuda")
    with torch.no_grad():
        together = model(input_ids=packed, position_ids=positions, use_cache=False).logits
        alone = torch.cat(
            [model(input_ids=a, use_cache=False).logits, model(input_ids=b, use_cache=False).logits],
                          dim=1)
    assert (together.float() - alone.float()).abs().max().item() < 5e-2  # bf16 arithmetic


def test_qlora_trains_on_cuda(tmp_path):
    pytest.importorskip("bitsandbytes")
    from test_engine_fixtures import make_assets

    from xtune.methods.common import apply_method
    from xtune.models.loading import load_model
    from xtune.plugins import get_registry

    model_dir, _ = make_assets(tmp_path)
    registry = get_registry()
    model = load_model(dict(pretrained_model_name_or_path=str(model_dir)), load_in_bits=4,
                       method=registry.tuning_methods.get("qlora"), precision="bfloat16", registry=registry)
    model = apply_method(model, dict(type="qlora", r=8), registry, registry.model_adapters.get("llama2"))
    ids = torch.randint(5, 300, (2, 32), device="cuda")
    model(input_ids=ids, labels=ids).loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("extra", [[], ["--deepspeed", "zero2"]])
def test_xtune_train_on_the_gpu(tmp_path, extra, capsys):
    if extra:
        pytest.importorskip("deepspeed")
    from test_engine_fixtures import make_assets

    from xtune.cli.main import main

    model_dir, data = make_assets(tmp_path / "assets")
    options = [f"pretrained_model_name_or_path={model_dir}", f"data_path={data}", "max_length=64",
               "batch_size=2",
               "max_steps=3", "save_steps=3", "evaluation_inputs=[]", "export_hf=False"]
    assert main(["train", "llama2_7b_lora_alpaca_e3", "--work-dir", str(tmp_path / "wd"), *extra,
                 "--cfg-options", *options]) == 0
    assert (tmp_path / "wd" / "iter_3.pth").exists()
    assert "precision bfloat16" in capsys.readouterr().err
