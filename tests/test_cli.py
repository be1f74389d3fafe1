"""The command line as a user meets it: help, version, list-cfg, copy-cfg, plugins, errors and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xtune import __version__

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "transformers", "mmengine", "deepspeed", "peft", "datasets", "bitsandbytes", "modelscope")


def xtune(*args, env=None, **kw):
    """Run `python -m xtune ARGS` in a subprocess, as a user would."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "xtune", *args], capture_output=True, text=True,
                          env=full_env, **kw)


@pytest.mark.integration
def test_help_lists_every_command():
    from xtune.cli.main import COMMANDS, build_parser

    result = xtune("--help")
    assert result.returncode == 0
    parser = build_parser()
    for action in parser._subparsers._group_actions:
        for command in action.choices:
            assert command in result.stdout
    assert len(COMMANDS) >= 4


@pytest.mark.integration
def test_version():
    result = xtune("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"xtune {__version__}"


@pytest.mark.integration
def test_list_cfg_json_fields_and_pattern():
    result = xtune("list-cfg", "--json")
    assert result.returncode == 0, result.stderr
    recipes = json.loads(result.stdout)
    assert len(recipes) >= 300
    assert {"name", "plugin", "model", "method", "dataset", "path"} <= set(recipes[0])
    qlora = json.loads(xtune("list-cfg", "-p", "qlora", "--json").stdout)
    assert qlora and all(r["method"] == "qlora" for r in qlora)
    assert len(qlora) < len(recipes)


@pytest.mark.integration
def test_list_cfg_table_and_glob():
    result = xtune("list-cfg", "-p", "llama2_7b_*_alpaca_e3")
    assert result.returncode == 0
    names = [line.split()[0] for line in result.stdout.splitlines()]
    assert "llama2_7b_lora_alpaca_e3" in names and "llama2_7b_qlora_alpaca_e3" in names
    assert all(line.split()[1] for line in result.stdout.splitlines())  # every row names its plugin
    assert "recipes" in result.stderr


@pytest.mark.integration
def test_list_cfg_imports_nothing_heavy():
    code = (
        "import sys, io, contextlib\n"
        "from xtune.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['list-cfg', '--json']) == 0\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("command", [["train", "no_such_recipe"], ["copy-cfg", "no_such_recipe", "/tmp"]])
@pytest.mark.integration
def test_unknown_recipe_is_one_error_line_exit_2(command):
    result = xtune(*command)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: unknown recipe 'no_such_recipe'")
    assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_unknown_recipe_suggests_close_names():
    result = xtune("train", "llama2_7b_lora_alpaka_e3")
    assert result.returncode == 2
    assert "did you mean: llama2_7b_lora_alpaca_e3" in result.stderr


@pytest.mark.integration
def test_debug_shows_the_traceback():
    result = xtune("train", "no_such_recipe", "--debug")
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "Error: unknown recipe" in result.stderr


@pytest.mark.integration
def test_bad_command_line_is_an_error_line():
    result = xtune("list-cfg", "--no-such-flag")
    assert result.returncode == 2
    assert result.stderr.startswith("Error: ") and len(result.stderr.strip().splitlines()) == 1
    result = xtune("no-such-command")
    assert result.returncode == 2 and result.stderr.startswith("Error: ")


@pytest.mark.integration
def test_copy_cfg_writes_an_editable_copy(tmp_path):
    result = xtune("copy-cfg", "internlm2_chat_7b_qlora_oasst1_e3", str(tmp_path / "cfgs"))
    assert result.returncode == 0, result.stderr
    copy = tmp_path / "cfgs" / "internlm2_chat_7b_qlora_oasst1_e3_copy.py"
    assert copy.read_text().startswith("# =====")
    assert "internlm2_chat_7b_qlora_oasst1_e3_copy.py" in result.stdout
    again = xtune("copy-cfg", "internlm2_chat_7b_qlora_oasst1_e3", str(tmp_path / "cfgs"))
    assert again.returncode == 2 and "--force" in again.stderr
    assert (
        xtune("copy-cfg", "internlm2_chat_7b_qlora_oasst1_e3", str(tmp_path / "cfgs"),
              "--force").returncode == 0)
    # list-cfg metadata reads a copied recipe too
    from xtune.recipe_files import read_metadata

    meta = read_metadata(copy)
    assert (meta.method, meta.dataset, meta.family) == ("qlora", "oasst1", "internlm2")


@pytest.mark.integration
def test_missing_recipe_file_path():
    result = xtune("train", "./nowhere/my_recipe.py")
    assert result.returncode == 2 and "does not exist" in result.stderr


@pytest.mark.integration
def test_plugins_json_lists_builtins():
    result = xtune("plugins", "--json")
    assert result.returncode == 0
    infos = {p["name"]: p for p in json.loads(result.stdout)}
    recipes = infos["xtune.default_plugins.recipes"]
    assert recipes["package"] == "xtune" and recipes["version"] == __version__
    assert recipes["hooks"] == ["register_recipes"] and len(recipes["registered"]["recipes"]) >= 300
    assert all(p["error"] is None for p in infos.values())


@pytest.mark.integration
def test_reference_plugin_recipes_have_its_provenance():
    """plugins/xtune-tinyllama, installed in CI (XTUNE_REQUIRE_REFERENCE_PLUGIN=1 there turns a skip into a
    failure)."""
    from importlib import metadata

    if not any(ep.name == "tinyllama" for ep in metadata.entry_points(group="xtune")):
        if os.environ.get("XTUNE_REQUIRE_REFERENCE_PLUGIN") == "1":
            pytest.fail("plugins/xtune-tinyllama is not installed")
        pytest.skip("reference plugin not installed (pip install -e plugins/xtune-tinyllama)")
    recipes = json.loads(xtune("list-cfg", "-p", "tinyllama", "--json").stdout)
    assert {r["name"] for r in recipes} >= {"tinyllama_1_1b_chat_lora_dolly_e3",
                                            "tinyllama_1_1b_chat_qlora_dolly_e3"}
    assert {r["plugin"] for r in recipes} == {"xtune-tinyllama"}
    infos = {p["name"]: p for p in json.loads(xtune("plugins", "--json").stdout)}
    assert infos["tinyllama"]["registered"] == {"model_adapters": ["tinyllama"], "dataset_maps": ["dolly"],
                                                "chat_templates": ["tinyllama_chat"],
                                                "reward_functions": ["ngram_repetition"],
                                                "recipes": ["tinyllama_1_1b_chat_lora_dolly_e3",
                                                            "tinyllama_1_1b_chat_qlora_dolly_e3"]}
    # XTUNE_LOAD_PLUGINS= starts xtune without it
    none = json.loads(xtune("list-cfg", "-p", "tinyllama", "--json", env={"XTUNE_LOAD_PLUGINS": ""}).stdout)
    assert none == []


def test_reference_plugin_recipes_name_registered_entries():
    pytest.importorskip("xtune_tinyllama")
    from mmengine.config import Config

    from xtune.plugins import PluginSystem

    system = PluginSystem()
    system.load_defaults()
    system.load_entry_points("tinyllama")
    registry = system.registry
    assert not system.failures()
    for recipe in (r for r in registry.recipes if r.plugin == "xtune-tinyllama"):
        cfg = Config.fromfile(recipe.path)
        assert cfg.model_adapter in registry.model_adapters
        assert cfg.dataset_map in registry.dataset_maps
        assert cfg.prompt_template in registry.chat_templates
        assert cfg.method in registry.tuning_methods


@pytest.mark.integration
def test_reference_plugin_template_renders_through_the_core():
    pytest.importorskip("xtune_tinyllama")
    result = xtune("template", "render", "tinyllama_chat", "--messages", "-",
                   input=json.dumps(
                       [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Hello!"}]))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello!</s>\n"
