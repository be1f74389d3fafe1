"""Which parts of a vision-language model train, per method and `vlm` setting (tiny Qwen2-VL, whose
projector sits inside its vision tower, and a composed LLaVA), and that image tokens carry no loss."""

from __future__ import annotations

import pytest
from test_vlm_fixtures import make_llava, make_qwen2_vl, write_mllm

from xtune.errors import ConfigError
from xtune.models.build import build_trainable
from xtune.plan import resolve_plan
from xtune.plugins import PluginSystem
from xtune.recipe import load_recipe
from xtune.recipe_files import resolve_recipe

RECIPE = "qwen2_vl_2b_instruct_lora_mllm_demo_e3"


@pytest.fixture(scope="module")
def registry():
    system = PluginSystem()
    system.load_defaults()
    return system.registry


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    return make_qwen2_vl(tmp_path_factory.mktemp("qwen2_vl"))


def trained_parts(recipe, registry, *options) -> dict[str, set[str]]:
    cfg = load_recipe(resolve_recipe(recipe, registry), list(options))
    model = build_trainable(cfg, registry, resolve_plan(cfg, registry)).model
    parts = {"vision": set(), "projector": set(), "language": set(), "other": set()}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        name = name.removeprefix("base_model.model.")
        part = ("projector" if ".merger." in name or "multi_modal_projector" in name
                else "vision" if ".visual." in name or "vision_tower" in name
                else "language" if "language_model" in name else "other")
        parts[part].add(name)
    return parts


def test_lora_trains_the_language_model_and_the_projector(qwen, registry):
    parts = trained_parts(RECIPE, registry, f"pretrained_model_name_or_path={qwen}")
    assert parts["language"] and all(".lora_" in n for n in parts["language"])
    assert parts["projector"] and all("modules_to_save" in n for n in parts["projector"])
    assert not parts["vision"] and not parts["other"]


def test_vision_lora_and_full_and_frozen_projector(qwen, registry):
    base = f"pretrained_model_name_or_path={qwen}"
    parts = trained_parts(RECIPE, registry, base, "vlm.vision_lora=True")
    assert parts["vision"] and all(".lora_" in n for n in parts["vision"])
    assert not any(".lora_" in n for n in parts["projector"])  # the projector trains whole, not by LoRA
    parts = trained_parts(RECIPE, registry, base, "method=full")
    assert parts["language"] and parts["projector"] and parts["other"] and not parts["vision"]
    parts = trained_parts(RECIPE, registry, base, "method=full", "vlm.freeze_vision=False",
                          "vlm.train_projector=False")
    assert parts["vision"] and not parts["projector"]


def test_qlora_quantises_the_language_model_only(qwen, registry):
    import bitsandbytes as bnb

    cfg = load_recipe(resolve_recipe("qwen2_vl_2b_instruct_qlora_llava_instruct_e1", registry),
                      [f"pretrained_model_name_or_path={qwen}", "model.gradient_checkpointing=False"])
    model = build_trainable(cfg, registry, resolve_plan(cfg, registry)).model
    quantised = {n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert quantised and all(".language_model." in n for n in quantised)


def test_pretrain_stage_refuses_another_method_and_unknown_settings(qwen, registry):
    base = f"pretrained_model_name_or_path={qwen}"
    with pytest.raises(ConfigError, match="trains the projector alone"):
        trained_parts(RECIPE, registry, base, "vlm.stage=pretrain")
    typo = r"unknown setting 'vlm.freeze_vison' \(did you mean: vlm.freeze_vision"
    with pytest.raises(ConfigError, match=typo):
        trained_parts(RECIPE, registry, base, "vlm.freeze_vison=False")


def test_image_tokens_carry_no_loss(tmp_path, registry):
    """The engine's loss is the cross-entropy of the answer tokens alone: no position whose target is an
    image token (or any prompt token) takes part, whatever the model predicts there."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForImageTextToText

    from xtune.data.image_batches import build_image_collator
    from xtune.data.vlm_pipeline import build_image_dataset
    from xtune.engine.model import CausalLMModel
    from xtune.models.processors import load_processor

    folder = make_llava(tmp_path / "llava")
    processor = load_processor(folder)
    rows = build_image_dataset(dict(dataset_map="mllm", data_path=str(write_mllm(tmp_path)),
                                    prompt_template="vicuna"), processor, registry=registry, use_cache=False)
    batch = build_image_collator({}, processor)([rows[i] for i in range(len(rows))])
    model = AutoModelForImageTextToText.from_pretrained(folder)
    loss = CausalLMModel(model)(**batch)["loss"]
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1]
    targets = batch["labels"][:, 1:]
    image = batch["input_ids"][:, 1:] == processor.tokenizer.convert_tokens_to_ids("<image>")
    answer = targets != -100
    assert not (answer & image).any() and answer.sum() < (~image).sum()
    expected = F.cross_entropy(logits[answer], targets[answer])
    assert torch.allclose(loss, expected, atol=1e-5)
