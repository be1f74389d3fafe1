"""The legacy hub-code families load natively and exactly (issue 19).

tests/assets/legacy/<name>/ holds tiny random checkpoints in each family's *original* layout (keys, shapes,
dtype and tokenizer files as the hub repos have them) with the logits, greedy generation and token ids that
the family's own hub code produced under transformers 4.x (tools/make_legacy_fixtures.py; README there).
Here xtune loads them on transformers 5 without that code and must give the same numbers; the merged
model written back with `--format original` must be the original bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xtune.plugins import get_registry

ASSETS = Path(__file__).resolve().parent / "assets" / "legacy"
# fixture folder -> (native class, conversion entry)
CONVERTED = {
    "internlm": ("LlamaForCausalLM", "internlm_llama"),
    "internlm_20b": ("LlamaForCausalLM", "internlm_llama"),
    "internlm2": ("LlamaForCausalLM", "internlm2_llama"),
    "internlm2_5": ("LlamaForCausalLM", "internlm2_llama"),
    "baichuan": ("LlamaForCausalLM", "baichuan_llama"),
    "baichuan2_7b": ("LlamaForCausalLM", "baichuan2_llama"),
    "chatglm3": ("GlmForCausalLM", "chatglm_glm"),
}


def fixture(name: str) -> Path:
    folder = ASSETS / name
    if not (folder / "config.json").is_file():
        pytest.skip(f"{folder} missing (tools/make_legacy_fixtures.py writes it)")
    return folder


def reference(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "reference.safetensors"))


def load(folder: Path, **model_cfg):
    from xtune.models.loading import load_model

    return load_model({"pretrained_model_name_or_path": str(folder), "torch_dtype": "float32", **model_cfg},
                      registry=get_registry())


@pytest.mark.parametrize("name", sorted(CONVERTED))
def test_logits_match_the_hub_code(name):
    import torch

    folder = fixture(name)
    ref = reference(folder)
    model = load(folder)
    assert type(model).__name__ == CONVERTED[name][0]
    assert model.xtune_legacy.entry.name == CONVERTED[name][1]
    with torch.no_grad():
        logits = model(ref["input_ids"]).logits
    assert logits.shape == ref["logits"].shape
    assert ref["logits"].abs().max() > 0.1  # not a degenerate fixture
    torch.testing.assert_close(logits, ref["logits"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CONVERTED))
def test_cached_generation_matches_the_hub_code(name):
    import torch

    from xtune.models.build import load_for_inference

    folder = fixture(name)
    ref = reference(folder)
    if "generated" not in ref:
        pytest.skip(f"{name}: the hub code could not generate under transformers 4.x")
    model, _ = load_for_inference(str(folder), dtype="float32", registry=get_registry())
    prompt = ref["input_ids"][:1, :10]
    with torch.no_grad():
        # plain greedy as the reference, whatever the folder's generation_config says (Baichuan2's
        # repetition_penalty)
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=8,
                             do_sample=False, repetition_penalty=1.0, pad_token_id=0)
    assert out[0, 10:].tolist() == ref["generated"].reshape(-1)[-8:].tolist()


def test_baichuan_13b_is_refused_with_the_reason():
    from xtune.errors import ConfigError

    folder = fixture("baichuan2_13b")
    with pytest.raises(ConfigError, match="ALiBi"):
        load(folder)


def test_qlora_on_a_converted_checkpoint_equals_qlora_on_its_native_save(tmp_path):
    """Quantisation sees the converted tensors: 4-bit loading of the original layout and of the same model
    saved natively give identical logits."""
    import torch

    folder = fixture("internlm2")
    ref = reference(folder)
    native = tmp_path / "native"
    load(folder, torch_dtype="bfloat16").save_pretrained(native)
    quant = dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype="float32")
    from xtune.models.loading import load_model

    a = load_model({"pretrained_model_name_or_path": str(folder), "torch_dtype": "float32",
                    "quantization": quant}, registry=get_registry())
    b = load_model({"pretrained_model_name_or_path": str(native), "torch_dtype": "float32",
                    "quantization": quant}, registry=get_registry())
    with torch.no_grad():
        torch.testing.assert_close(a(ref["input_ids"]).logits, b(ref["input_ids"]).logits, rtol=0, atol=0)


def _zero_adapter(model, out: Path) -> Path:
    """A LoRA adapter whose update is zero (peft starts B at 0): merging it changes nothing."""
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(model, LoraConfig(r=2, lora_alpha=4, target_modules="all-linear"))
    peft_model.save_pretrained(out)
    return out


@pytest.mark.parametrize("name", sorted(CONVERTED))
@pytest.mark.integration
def test_merge_format_original_round_trips_bit_exact(name, tmp_path):
    """`convert merge --format original` of a zero update writes the original checkpoint back bit for bit
    (every stored tensor, dtype included); read again by xtune it is the same native model."""
    import torch
    from safetensors.torch import load_file

    from xtune.cli.main import main
    from xtune.export.original_layout import _read, _stored_tensors

    folder = fixture(name)
    adapter = _zero_adapter(load(folder, torch_dtype="auto"), tmp_path / "adapter")
    out = tmp_path / "original"
    assert main(["convert", "merge", str(folder), str(adapter), str(out), "--format", "original"]) == 0
    before = {k: _read(*where) for k, where in _stored_tensors(folder).items()}
    after = {}
    for shard in out.glob("*.safetensors"):
        after.update(load_file(str(shard)))
    assert sorted(after) == sorted(before)
    if name == "baichuan2_7b":  # NormHead: its rows are written back normalised (what the hub code uses)
        raw = before["lm_head.weight"]
        before["lm_head.weight"] = torch.nn.functional.normalize(raw.float(), dim=-1).to(raw.dtype)
        assert not torch.equal(before["lm_head.weight"], raw)
    for key in before:
        assert after[key].dtype == before[key].dtype, key
        assert torch.equal(after[key], before[key]), key
    written = json.loads((out / "config.json").read_text())
    assert written == json.loads((folder / "config.json").read_text())
    assert (out / "tokenizer.model").is_file()
    stored = written["torch_dtype"]  # as merge loads it: the checkpoint's own precision
    again = dict(load(out, torch_dtype=stored).state_dict())
    first = dict(load(folder, torch_dtype=stored).state_dict())
    assert sorted(again) == sorted(first)
    assert all(torch.equal(again[k], first[k]) for k in first)


def test_merge_format_original_refuses_a_native_base(tmp_path, capsys):
    from xtune.cli.main import main

    folder = fixture("internlm2")
    native = tmp_path / "native"
    model = load(folder)
    model.save_pretrained(native)
    adapter = _zero_adapter(model, tmp_path / "adapter")
    assert main(["convert", "merge", str(native), str(adapter), str(tmp_path / "out"), "--format",
                 "original"]) == 2
    assert "already in a native transformers layout" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_conversion_that_leaves_weights_unset_is_refused():
    """A rule set that does not fit the checkpoint (here: InternLM2 without its wqkv split) must not train
    randomly initialised q/k/v projections: it is one error naming what is missing."""
    import torch
    from transformers import AutoModelForCausalLM

    from xtune.default_plugins.conversions import INTERNLM2
    from xtune.errors import ConfigError
    from xtune.models.legacy import LegacyCheckpoint, load_native, read_raw_config
    from xtune.registry import CheckpointConversion

    folder = fixture("internlm2")
    broken = CheckpointConversion(name="broken", model_type="internlm2", target="llama",
                                  config="xtune.models.legacy_configs:internlm2_llama",
                                  weights=tuple(r for r in INTERNLM2 if "wqkv" not in r[0]))
    legacy = LegacyCheckpoint(str(folder), read_raw_config(str(folder)), broken)
    with pytest.raises(ConfigError, match=r"left \d+ weights .* without a value \(model.layers.0.self_attn"):
        load_native(legacy, AutoModelForCausalLM, dtype=torch.float32)


@pytest.mark.integration
def test_zero3_loads_a_converted_checkpoint_partitioned(tmp_path):
    """Under DeepSpeed ZeRO-3 the checkpoint is converted while zero.Init partitions it: the first loss is the
    plain run's (one process), the second one too after DeepSpeed's optimizer step. The DeepSpeed run is a
    process of its own (DeepSpeed keeps the first process group it adopts for the life of a process)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("deepspeed")
    from xtune.cli.main import main

    records = [{"instruction": f"say {w}", "input": "", "output": f"{w} {w}"} for w in
               ("one", "two", "three", "four", "five", "six")]
    data = tmp_path / "alpaca.json"
    data.write_text(json.dumps(records), encoding="utf-8")
    options = [f"pretrained_model_name_or_path={fixture('internlm2')}", f"data_path={data}", "max_length=64",
               "max_steps=2", "accumulative_counts=1", "evaluation_inputs=[]", "save_steps=2",
               "export_hf=False"]
    recipe = "internlm2_chat_7b_lora_alpaca_e3"

    def losses(work_dir: Path) -> list[float]:
        return [h["loss"] for h in json.loads((work_dir / "loss_history.json").read_text())["train"]]

    assert main(["train", recipe, "--work-dir", str(tmp_path / "plain"), "--cfg-options", *options]) == 0
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    run = subprocess.run([sys.executable, "-m", "xtune", "train", recipe, "--work-dir", str(tmp_path / "z3"),
                          "--deepspeed", "zero3", "--cfg-options", *options], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    zero3, plain = losses(tmp_path / "z3"), losses(tmp_path / "plain")
    assert zero3[0] == pytest.approx(plain[0], rel=1e-6)  # the same weights were loaded
    assert zero3[1] == pytest.approx(plain[1], rel=1e-3)  # after one update by DeepSpeed's optimizer


def test_chatglm_v1_and_visualglm_are_refused_with_the_reason():
    from xtune.errors import ConfigError
    from xtune.models.legacy import find_legacy

    chatglm_6b = {"model_type": "chatglm", "architectures": ["ChatGLMModel"], "position_encoding_2d": True,
                  "inner_hidden_size": 16384, "vocab_size": 130528}
    with pytest.raises(ConfigError, match="GLM-130B's 2D rotary positions"):
        find_legacy("THUDM/chatglm-6b", chatglm_6b, registry=get_registry())
    chatglm3 = json.loads((fixture("chatglm3") / "config.json").read_text())
    assert find_legacy("chatglm3", chatglm3, registry=get_registry()).entry.target == "glm"


@pytest.mark.integration
def test_the_seed_recipe_trains_internlm2_chat_7b_qlora_on_the_hub_layout(tmp_path):
    """`xtune train internlm2_chat_7b_qlora_oasst1_e3` as written (QLoRA, 4-bit NF4 base, oasst1 data), on
    the tiny InternLM2 checkpoint in the hub's own layout, offline; WORK_DIR/hf is an adapter of the Llama
    twin that names the original folder as its base."""
    from xtune.cli.main import main

    folder = fixture("internlm2")
    data = tmp_path / "guanaco.jsonl"
    data.write_text("".join(json.dumps({"text": f"### Human: say {w} ### Assistant: {w} {w}"}) + "\n"
                            for w in ("one", "two", "three", "four")), encoding="utf-8")
    work = tmp_path / "wd"
    assert main(["train", "internlm2_chat_7b_qlora_oasst1_e3", "--work-dir", str(work), "--cfg-options",
                 f"pretrained_model_name_or_path={folder}", f"data_path={data}", "max_length=64",
                 "max_steps=2", "accumulative_counts=1", "evaluation_inputs=[]", "save_steps=0"]) == 0
    adapter = json.loads((work / "hf" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(folder)
    plan = json.loads((work / "plan.json").read_text())
    assert plan["model"]["quantization"]["load_in_4bit"] is True and not plan["model"]["trust_remote_code"]
