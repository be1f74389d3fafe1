"""The issue's "done when" with the real engine, on tiny models: a LLaVA recipe in its two stages (a tiny
CLIP + a random Llama with the shared tiny Llama-2's tokenizer) and Hugging Face VLM recipes (tiny
LLaVA, Qwen2-VL, Qwen2.5-VL, LLaVA-NeXT, InternVL, Idefics3 and SmolVLM) train with `xtune train`, the loss
falls, `WORK_DIR/hf` and `convert pth_to_hf` agree, the outputs load in plain transformers, `convert merge`
folds an adapter in, and `xtune chat --image` answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_path
from test_vlm_fixtures import (
    make_clip,
    make_idefics3,
    make_internvl,
    make_llama,
    make_llava,
    make_llava_next,
    make_qwen2_5_vl,
    make_qwen2_vl,
    make_smolvlm,
    write_llava,
    write_mllm,
)

from xtune.cli.main import main

pytestmark = pytest.mark.integration
PRETRAIN = "llava_vicuna_7b_v1_5_clip_vit_large_p14_336_freeze_pretrain_llava_pretrain_e1"
FINETUNE = "llava_vicuna_7b_v1_5_clip_vit_large_p14_336_lora_finetune_llava_instruct_e1"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm")
    return dict(root=root, llava_data=write_llava(root / "data"), mllm_data=write_mllm(root / "data"),
                clip=make_clip(root / "clip"), picture=root / "data" / "pictures" / "0_red_square.jpg")


def options(data, folder, **extra) -> list[str]:
    values = dict(data_path=data, image_folder=folder, max_length=256, batch_size=2, accumulative_counts=1,
                  max_steps=8, save_steps=4, save_total_limit=-1, log_interval=1, lr=1e-2, seed=0,
                  warmup_ratio=0.0, **{"model.gradient_checkpointing": False})
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def train(recipe, work_dir, opts) -> list[float]:
    assert main(["train", recipe, "--work-dir", str(work_dir), "--cfg-options", *opts]) == 0
    return [h["loss"] for h in json.loads((Path(work_dir) / "loss_history.json").read_text())["train"]]


def falls(losses) -> bool:
    return sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.05


@pytest.fixture(scope="module")
def llava_runs(assets):
    """Stage 1 (the projector on captions) then stage 2 (projector + LoRA) from stage 1's projector."""
    root, folder = assets["root"], assets["llava_data"].parent
    tokenizer = shared_path("reference", "models", "llama2_tiny_random", "hf_converted_DERIVED")
    llm = make_llama(root / "llm", tokenizer)
    common = [f"pretrained_model_name_or_path={llm}", f"vision_model_name_or_path={assets['clip']}"]
    first = train(PRETRAIN, root / "stage1",
                  common + options(assets["llava_data"], folder, max_steps=4, lr=1e-3))
    stage2 = common + options(assets["mllm_data"], folder, pretrained_projector=root / "stage1" / "hf",
                              dataset_map="mllm", lr=2e-2)
    second = train(FINETUNE, root / "stage2", stage2)
    return dict(first=first, second=second, stage2=stage2, llm=llm)


def test_llava_pretrain_trains_the_projector_alone(assets, llava_runs):
    from transformers import AutoModelForCausalLM, LlavaForConditionalGeneration

    from xtune.checkpoint.read import read_checkpoint

    stage1 = assets["root"] / "stage1"
    assert set(read_checkpoint(str(stage1 / "iter_4.pth")).state_dict) == {
        f"model.multi_modal_projector.{n}.{p}" for n in ("linear_1", "linear_2") for p in ("weight", "bias")}
    saved = LlavaForConditionalGeneration.from_pretrained(stage1 / "hf").state_dict()
    llm = AutoModelForCausalLM.from_pretrained(llava_runs["llm"]).state_dict()
    for name in ("model.layers.0.mlp.up_proj.weight", "model.norm.weight"):  # the language model: frozen
        assert (saved[name.replace("model.", "model.language_model.", 1)] == llm[name]).all()


def test_llava_finetune_learns_exports_a_plain_llava_and_chats_with_an_image(assets, llava_runs, capsys):
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForImageTextToText, AutoProcessor, LlavaForConditionalGeneration

    assert falls(llava_runs["second"]), llava_runs["second"]  # from ln(32000) = 10.37
    stage2 = assets["root"] / "stage2"
    out = assets["root"] / "converted"
    assert main(["convert", "pth_to_hf", FINETUNE, str(stage2 / "iter_8.pth"), str(out), "--cfg-options",
                 *llava_runs["stage2"]]) == 0
    exported, converted = load_file(stage2 / "hf" / "model.safetensors"), load_file(out / "model.safetensors")
    assert exported.keys() == converted.keys() and not any(".lora_" in k for k in exported)
    assert all(torch.allclose(exported[k], converted[k], atol=1e-6) for k in exported)
    model = AutoModelForImageTextToText.from_pretrained(stage2 / "hf")
    assert isinstance(model, LlavaForConditionalGeneration)
    processor = AutoProcessor.from_pretrained(stage2 / "hf")
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    assert prompt.startswith("<s>USER: <image>What is it?\nASSISTANT:")
    from PIL import Image

    inputs = processor(text=[prompt], images=[Image.open(assets["picture"])], return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    assert inputs["input_ids"].shape[1] < generated.shape[1] <= inputs["input_ids"].shape[1] + 3
    capsys.readouterr()
    assert main(["chat", str(stage2 / "hf"), "--image", str(assets["picture"]), "--prompt", "What is it?",
                 "--max-new-tokens", "4", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.strip()


@pytest.mark.parametrize("recipe,make", [("qwen2_vl_2b_instruct_lora_mllm_demo_e3", make_qwen2_vl),
                                         ("smolvlm_instruct_lora_mllm_demo_e3", make_idefics3),
                                         ("llava_1_5_7b_hf_lora_mllm_demo_e3", make_llava),
                                         ("qwen2_5_vl_3b_instruct_lora_mllm_demo_e3", make_qwen2_5_vl),
                                         ("llava_v1_6_mistral_7b_hf_lora_mllm_demo_e3", make_llava_next),
                                         ("internvl3_1b_hf_lora_mllm_demo_e3", make_internvl),
                                         ("smolvlm_256m_instruct_lora_mllm_demo_e3", make_smolvlm)])
def test_hf_vlm_lora_learns_merges_and_chats(assets, recipe, make, capsys):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from xtune.data.image_tokens import ImageTokens
    from xtune.models.processors import load_processor

    root = assets["root"] / recipe
    base = make(root / "base")
    data = assets["mllm_data"]
    opts = [f"pretrained_model_name_or_path={base}"] + options(data, data.parent)
    assert falls(train(recipe, root / "wd", opts))
    adapter = root / "wd" / "hf"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert "language_model" in config["target_modules"] or "text_model" in config["target_modules"]
    assert config["modules_to_save"] in (["merger"], ["connector"], ["multi_modal_projector"])
    assert (adapter / "chat_template.jinja").is_file() and (adapter / "processor_config.json").is_file()
    tokens = [ImageTokens(load_processor(f)).for_size((40, 40)) for f in (base, adapter)]
    assert tokens[0] == tokens[1]  # the saved processor writes a picture's tokens as the base's does
    merged = root / "merged"
    assert main(["convert", "merge", str(base), str(adapter), str(merged), "--dtype", "float32"]) == 0
    ids = torch.tensor([[1, 5, 9, 14, 20]])
    with torch.no_grad():
        got = AutoModelForImageTextToText.from_pretrained(merged)(input_ids=ids).logits
        ref = PeftModel.from_pretrained(AutoModelForImageTextToText.from_pretrained(base), str(adapter))
        assert (got - ref(input_ids=ids).logits).abs().max().item() < 1e-4
    capsys.readouterr()
    for target in ([str(merged)], [str(base), "--adapter", str(adapter)]):
        assert main(["chat", *target, "--image", str(assets["picture"]), "--prompt", "What is it?",
                     "--max-new-tokens", "4", "--temperature", "0"]) == 0
    assert capsys.readouterr().out.count("\n") >= 2


def test_chat_repl_attaches_images_and_refuses_bad_ones(assets, llava_runs, capsys):
    from xtune.chat.repl import interactive
    from xtune.chat.session import GenerationSettings
    from xtune.chat.vision import VisionChatSession
    from xtune.models.build import load_for_inference
    from xtune.plugins import get_registry

    model, processor = load_for_inference(str(assets["root"] / "stage2" / "hf"), registry=get_registry())
    session = VisionChatSession(model, processor, registry=get_registry(),
                                settings=GenerationSettings(max_new_tokens=3, temperature=0))
    assert session.template == "vicuna" and not session.use_tokenizer_template  # recognised: its stop words
    lines = iter([f"/image {assets['picture']}", "What is it?", "/image nowhere.png", "And now?", "/exit"])
    assert interactive(session, stream=False, read=lambda _: next(lines)) == 0
    err = capsys.readouterr().err
    assert "goes with your next message" in err and "'nowhere.png' does not exist" in err
    assert session.history[0]["images"] == [str(assets["picture"])] and "images" not in session.history[2]
    assert session.history[0]["content"].startswith("<image>\n")


def test_chat_image_with_a_text_model_or_a_missing_picture_is_one_error(assets, capsys):
    llm = shared_path("reference", "models", "llama2_tiny_random", "hf_converted_DERIVED")
    assert main(["chat", str(llm), "--image", "missing.png", "--prompt", "hi"]) == 2
    assert "--image 'missing.png': does not exist" in capsys.readouterr().err
    assert main(["chat", str(llm), "--image", str(assets["picture"]), "--prompt", "hi"]) == 2
    assert "is a text model and cannot see images" in capsys.readouterr().err
