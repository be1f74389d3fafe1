"""Generated recipes: they load with mmengine's Config, name only registered entries, and match the
generator."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from xtune.plugins import PluginSystem
from xtune.recipe_files import builtin_recipe_dir, read_metadata

REPO = Path(__file__).resolve().parent.parent
REQUIRED = ["internlm_7b_qlora_oasst1_e3", "internlm2_chat_7b_qlora_oasst1_e3", "llama2_7b_qlora_alpaca_e3",
            "llama2_7b_lora_alpaca_e3", "smollm2_135m_instruct_lora_self_cognition_e3"]
SETTINGS = ["pretrained_model_name_or_path", "data_path", "prompt_template", "max_length",
            "pack_to_max_length", "batch_size", "accumulative_counts", "dataloader_num_workers", "max_epochs",
            "optim_type", "lr", "betas", "weight_decay", "max_norm", "warmup_ratio", "save_steps",
            "save_total_limit", "evaluation_freq", "SYSTEM", "evaluation_inputs", "max_steps", "seed",
            "model_adapter", "dataset_map", "method"]


@pytest.fixture(scope="module")
def registry():
    system = PluginSystem()
    system.load_defaults()
    return system.registry


def builtin_recipes(registry):
    return [r for r in registry.recipes if r.plugin == "xtune"]


def test_counts_and_required_names(registry):
    recipes = builtin_recipes(registry)
    assert len(recipes) >= 300
    assert len({r.family for r in recipes}) >= 12
    names = {r.name for r in recipes}
    assert set(REQUIRED) <= names
    assert Counter(r.method for r in recipes).keys() >= {"full", "lora", "qlora"}


def test_index_matches_files(registry):
    """index.json (what list-cfg reads) says what the files say."""
    for recipe in builtin_recipes(registry):
        meta = read_metadata(Path(recipe.path))
        assert (meta.name, meta.family, meta.method, meta.dataset, meta.epochs, meta.template, meta.hub_id,
                meta.model, meta.stage, meta.objective, meta.sequence_parallel) == (
                    recipe.name, recipe.family, recipe.method, recipe.dataset, recipe.epochs, recipe.template,
                    recipe.hub_id, recipe.model, recipe.stage, recipe.objective,
                    recipe.sequence_parallel), recipe.name
        stage = f"{recipe.stage}_" if recipe.stage else ""  # LLaVA's two stages
        objective = f"_{recipe.objective}" if recipe.objective else ""  # preference recipes name theirs
        sp = f"_sp{recipe.sequence_parallel}" if recipe.sequence_parallel > 1 else ""  # long context
        # a LoRA start other than the default is in the name: _lora_pissa_, _qlora_loftq_
        init = re.search(r"^    init='(pissa|loftq)'", Path(recipe.path).read_text(encoding="utf-8"), re.M)
        method = f"{recipe.method}_{init.group(1)}" if init else recipe.method
        assert recipe.name == (f"{recipe.model}_{method}{objective}_{stage}{recipe.dataset}{sp}"
                               f"_e{recipe.epochs}")


def test_generator_reads_the_registry(registry):
    """One catalogue: every built-in language model has recipes, each with its adapter's template and
    remote-code flag (vision-language recipes: tests/test_vlm_recipes.py)."""
    models = {m.name: m for m in registry.models
              if m.plugin == "xtune" and registry.model_adapters.get(m.family).model_kind == "llm"}
    recipes = [r for r in builtin_recipes(registry) if r.model in models]
    assert {r.model for r in recipes} == set(models)
    for recipe in recipes:
        model = models[recipe.model]
        adapter = registry.model_adapters.get(model.family)
        assert (recipe.family, recipe.hub_id, recipe.template) == (model.family, model.hub_id,
                                                                   adapter.default_template)
    text = Path(registry.recipes.get("internlm2_chat_7b_qlora_oasst1_e3").path).read_text(encoding="utf-8")
    # the seed family loads natively (no hub code unless the user sets it): docs/legacy_models.md
    assert "trust_remote_code = False  # hub-code layout, loaded natively as Llama" in text
    assert "use_varlen_attn" not in text
    assert registry.recipes.get("baichuan2_13b_chat_lora_alpaca_e3").unsupported.startswith(
        "Baichuan's 13B models use ALiBi")
    assert not registry.recipes.get("baichuan2_7b_chat_lora_alpaca_e3").unsupported
    assert "bnb_4bit_quant_type='nf4'" in text and "lora_alpha=16" in text


@pytest.mark.integration
def test_every_recipe_loads_with_mmengine_and_names_registered_entries(registry):
    from mmengine.config import Config

    problems = []
    for recipe in builtin_recipes(registry):
        cfg = Config.fromfile(recipe.path)
        missing = [key for key in SETTINGS if key not in cfg]
        if missing:
            problems.append(f"{recipe.name}: missing settings {missing}")
        for table, value in [("model_adapters", cfg.model_adapter), ("dataset_maps", cfg.dataset_map),
                             ("chat_templates", cfg.prompt_template), ("tuning_methods", cfg.method)]:
            if value not in registry.tables[table]:
                problems.append(f"{recipe.name}: {table} has no {value!r}")
        if cfg.model.quantization and registry.tuning_methods.get(cfg.method).load_in_bits != 4:
            problems.append(f"{recipe.name}: quantised model for a method that does not load in 4 bits")
        if cfg.dataset_map == "self_cognition" and (
                cfg.train_dataset.self_cognition_name != cfg.self_cognition_name
                or cfg.train_dataset.self_cognition_author != cfg.self_cognition_author):
            problems.append(f"{recipe.name}: self-cognition names do not reach train_dataset")
        if cfg.train_dataset.max_length != cfg.max_length or cfg.optim_wrapper.optimizer.lr != cfg.lr:
            problems.append(f"{recipe.name}: a section does not use the top-level setting")
    assert not problems, "\n".join(problems[:20])


def test_header_gives_train_command_and_override_example(registry):
    recipes = builtin_recipes(registry)
    low_memory = [r for r in recipes if r.method in ("lomo", "badam", "galore")][:6]
    for recipe in recipes[:50] + low_memory:
        head = Path(recipe.path).read_text(encoding="utf-8").split("PART 1")[0]
        limits = dict(registry.tuning_methods.get(recipe.method).limits)
        if recipe.objective in ("ppo", "grpo"):  # online RL runs in one process, without DeepSpeed
            assert f"xtune train {recipe.name}  # one process" in head
        elif "processes" in limits:  # BAdam, LISA, LOMO: one process
            assert f"xtune train {recipe.name}  # one process, no DeepSpeed: {recipe.method}" in head
        elif "deepspeed" in limits:  # GaLore, APOLLO: DDP works, DeepSpeed does not
            assert f"xtune train {recipe.name}  # no DeepSpeed: " in head
        else:
            assert f"xtune train {recipe.name} --deepspeed" in head
        assert f"xtune train {recipe.name} --cfg-options" in head


@pytest.mark.integration
def test_generator_check_passes():
    result = subprocess.run([sys.executable, "tools/gen_recipes.py", "--check"], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.integration
def test_generator_check_fails_on_a_hand_edit(tmp_path):
    """--check must notice an edited, a missing and an extra file (run on a copy of the repo's generator)."""
    import shutil

    root = tmp_path / "repo"
    (root / "tools").mkdir(parents=True)
    for name in ("gen_recipes.py", "gen_recipes_vlm.py"):
        shutil.copy(REPO / "tools" / name, root / "tools")
    shutil.copytree(builtin_recipe_dir(), root / "recipes", ignore=shutil.ignore_patterns("__pycache__"))
    run = [sys.executable, "tools/gen_recipes.py", "--check"]
    assert subprocess.run(run, cwd=root, capture_output=True).returncode == 0
    target = root / "recipes" / "llama2" / "llama2_7b_lora_alpaca_e3.py"
    target.write_text(target.read_text() + "# hand edit\n")
    (root / "recipes" / "llama2" / "extra_recipe.py").write_text("x = 1\n")
    result = subprocess.run(run, cwd=root, capture_output=True, text=True)
    assert result.returncode == 1
    assert "out of date: recipes/llama2/llama2_7b_lora_alpaca_e3.py" in result.stderr
    assert "not generated: recipes/llama2/extra_recipe.py" in result.stderr
    subprocess.run([sys.executable, "tools/gen_recipes.py"], cwd=root, check=True, capture_output=True)
    assert subprocess.run(run, cwd=root, capture_output=True).returncode == 0


def test_index_is_sorted_json():
    data = json.loads((builtin_recipe_dir() / "index.json").read_text(encoding="utf-8"))
    assert list(data) == sorted(data)
