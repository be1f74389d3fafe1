"""Vision-language entries in the one catalogue, and the recipes generated from them."""

from __future__ import annotations

import pytest

from xtune.errors import RegistryError
from xtune.plugins import PluginSystem
from xtune.registry import ModelAdapter


@pytest.fixture(scope="module")
def registry():
    system = PluginSystem()
    system.load_defaults()
    return system.registry


def test_vlm_families_name_their_parts(registry):
    vlms = {a.name: a for a in registry.model_adapters if a.model_kind == "vlm"}
    assert {"llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "internvl", "idefics3", "smolvlm"} <= set(vlms)
    for adapter in vlms.values():
        assert adapter.vision_tower and adapter.projector and adapter.language_model
        assert adapter.layers_path.startswith(adapter.language_model + ".")
        assert adapter.default_template in registry.chat_templates
    assert {a.name for a in registry.model_adapters if a.model_kind == "vision"} == {"clip", "siglip"}
    with pytest.raises(ValueError, match="needs vision_tower, projector"):
        ModelAdapter(name="x", model_types=("x",), model_kind="vlm", vision_tower="v").validate()
    with pytest.raises(ValueError, match="model_kind must be one of"):
        ModelAdapter(name="x", model_types=("x",), model_kind="audio").validate()


def test_a_plugin_registers_a_vlm_family_through_the_same_hook(registry):
    from test_plugins import plugin_module

    def register_model_adapters(register):
        register(ModelAdapter(name="my_vlm", model_types=("my_vlm",), model_kind="vlm",
                              vision_tower="model.vision", projector="model.proj", language_model="model.lm"))

    system = PluginSystem()
    system.load_defaults()
    plugin = plugin_module("p", register_model_adapters=register_model_adapters)
    system.add(plugin, "p", "xtune-my-vlm", "0.1")
    assert system.registry.model_adapters.get("my_vlm").plugin == "xtune-my-vlm"
    with pytest.raises(RegistryError, match="already registered"):
        system.registry.model_adapters.add(ModelAdapter(name="llava", model_types=("llava",)), "x", "x")


def test_llava_and_vlm_recipes(registry):
    from mmengine.config import Config

    recipes = [r for r in registry.recipes if r.plugin == "xtune"
               and registry.model_adapters.get(r.family).model_kind == "vlm"]
    assert len(recipes) >= 40
    llava = [r for r in recipes if r.stage]
    assert {r.stage for r in llava} == {"pretrain", "finetune"} and len(llava) >= 24
    vlm_models = {m.name for m in registry.models
                  if registry.model_adapters.get(m.family).model_kind == "vlm"}
    assert vlm_models <= {r.model for r in recipes}
    for recipe in recipes[::7]:
        cfg = Config.fromfile(recipe.path)
        assert cfg.vlm.freeze_vision is True and cfg.vlm.train_projector is True
        assert cfg.train_dataset.image_folder == cfg.image_folder and not cfg.pack_to_max_length
        assert cfg.dataset_map in registry.dataset_maps and cfg.prompt_template in registry.chat_templates
        if recipe.stage == "pretrain":
            assert cfg.method == "freeze" and cfg.method_cfg.trainable_layers == 0
            assert recipe.dataset == "llava_pretrain"
        if recipe.stage:
            assert cfg.vlm.vision_model == cfg.vision_model_name_or_path
            assert registry.model_adapters.get(cfg.llm_adapter).default_template == cfg.prompt_template


def test_list_cfg_pattern_llava_lists_them(capsys):
    from xtune.cli.main import main

    assert main(["list-cfg", "-p", "llava_vicuna_7b"]) == 0
    out = capsys.readouterr().out
    assert "llava_vicuna_7b_v1_5_clip_vit_large_p14_336_freeze_pretrain_llava_pretrain_e1" in out
    assert "llava_vicuna_7b_v1_5_siglip_so400m_p14_384_qlora_finetune_llava_instruct_e1" in out


def test_a_preference_objective_on_a_vlm_is_refused_in_preflight(registry, tmp_path, capsys):
    """Preference objectives train text models: the recipe is refused with the other preflight problems,
    before anything loads, and no work dir is left."""
    from pathlib import Path

    from xtune.cli.main import main

    recipe = Path(registry.recipes.get("qwen2_vl_2b_instruct_lora_mllm_demo_e3").path)
    copy = tmp_path / "vlm_dpo.py"
    copy.write_text(recipe.read_text(encoding="utf-8") + "objective = dict(type='dpo')\n", encoding="utf-8")
    assert main(["train", str(copy), "--work-dir", str(tmp_path / "wd")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "preference objectives train text models" in err[0]
    assert not (tmp_path / "wd").exists()
