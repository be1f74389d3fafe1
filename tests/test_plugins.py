"""The plugin system: hooks, provenance, duplicates, broken plugins, XTUNE_LOAD_PLUGINS.

Throwaway plugins are registered in fixtures (datasette / simonw-llm style) on a fresh PluginSystem,
so these tests never depend on what is installed beyond xtune's built-ins.
"""

from __future__ import annotations

import inspect
import re
import types
from pathlib import Path

import pluggy
import pytest

from xtune import hookspecs, plugins
from xtune.errors import ConfigError, RegistryError
from xtune.hookspecs import hookimpl
from xtune.registry import (
    ChatTemplate,
    DatasetMap,
    DeepSpeedPreset,
    Model,
    ModelAdapter,
    Recipe,
    TuningMethod,
)

REPO = Path(__file__).resolve().parent.parent
HOOKS = sorted(name for name,
               fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("register_"))


@pytest.fixture
def system():
    """A plugin system with only xtune's built-ins: add throwaway plugins to it in a test."""
    s = plugins.PluginSystem()
    s.load_defaults()
    return s


def plugin_module(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        setattr(module, hook_name, hookimpl(fn))
    return module


def test_builtins_register_every_kind(system):
    reg = system.registry
    assert not system.failures()
    for kind in ("model_adapters", "models", "dataset_maps", "chat_templates", "tuning_methods",
                 "deepspeed_presets", "objectives", "reward_functions", "recipes"):
        assert len(reg.tables[kind]) > 0, kind
    assert reg.recipes.get("llama2_7b_lora_alpaca_e3").plugin == "xtune"
    assert reg.model_adapters.get("internlm2").module == "xtune.default_plugins.models"


def test_hook_register_model_adapters(system):
    def register_model_adapters(register):
        register(ModelAdapter(name="falcon", model_types=("falcon",), default_template="chatml"))

    system.add(plugin_module("p", register_model_adapters=register_model_adapters), "p", "xtune-falcon",
               "1.0")
    entry = system.registry.model_adapters.get("falcon")
    assert (entry.plugin, entry.module, entry.model_types) == ("xtune-falcon", "p", ("falcon",))
    assert system.info["p"].registered == {"model_adapters": ["falcon"]}


def test_hook_register_models(system):
    def register_models(register):
        register(
            Model(name="falcon_7b", family="falcon", hub_id="tiiuae/falcon-7b", params_b=7, chat=False,
                  hidden_size=4544, num_layers=32))

    system.add(plugin_module("p", register_models=register_models), "p", "xtune-falcon", "1.0")
    entry = system.registry.models.get("falcon_7b")
    assert (entry.plugin, entry.hub_id, entry.hidden_size) == ("xtune-falcon", "tiiuae/falcon-7b", 4544)
    assert system.registry.models.get("internlm2_chat_7b").family == "internlm2"


def test_model_needs_family_and_hub_id(system):
    def register_models(register):
        register(Model(name="nameless"))

    system.add(plugin_module("p", register_models=register_models), "p", "xtune-bad", "1.0")
    assert "needs a family" in system.failures()[0].error


def test_hook_register_dataset_maps(system):
    def register_dataset_maps(register):
        register(DatasetMap(name="my_qa", format="alpaca", columns=(("instruction", "question"),)))

    system.add(plugin_module("p", register_dataset_maps=register_dataset_maps), "p", "xtune-qa", "1.0")
    assert system.registry.dataset_maps.get("my_qa").plugin == "xtune-qa"


def test_hook_register_chat_templates(system):
    def register_chat_templates(register):
        register(
            ChatTemplate(name="my_chat", stop_words=("</s>",), user="<u>{content}</u>", assistant="{content}",
                         assistant_end="</s>"))

    system.add(plugin_module("p", register_chat_templates=register_chat_templates), "p", "xtune-chat", "1.0")
    assert system.registry.chat_templates.get("my_chat").stop_words == ("</s>",)


def test_hook_register_tuning_methods(system):
    def register_tuning_methods(register):
        register(TuningMethod(name="vera", builder="my_pkg.vera:apply", defaults=(("r", 256),)))

    system.add(plugin_module("p", register_tuning_methods=register_tuning_methods), "p", "xtune-vera", "1.0")
    assert dict(system.registry.tuning_methods.get("vera").defaults) == {"r": 256}


def test_hook_register_deepspeed_presets(system):
    def register_deepspeed_presets(register):
        register(DeepSpeedPreset(name="zero2_big", config=(("zero_optimization", {"stage": 2}),)))

    system.add(plugin_module("p", register_deepspeed_presets=register_deepspeed_presets), "p", "xtune-ds",
               "1.0")
    preset = system.registry.deepspeed_presets.get("zero2_big")
    cfg = preset.as_dict()
    cfg["zero_optimization"]["stage"] = 3  # a copy: the registry entry is not changed by a caller
    assert preset.as_dict()["zero_optimization"]["stage"] == 2


def test_hook_register_objectives(system):
    from xtune.registry import Objective

    def register_objectives(register):
        register(Objective(name="rso", loss="my_pkg.rso:RSO", data="pairs", reference=True,
                           defaults=(("beta", 0.05),)))

    system.add(plugin_module("p", register_objectives=register_objectives), "p", "xtune-rso", "1.0")
    entry = system.registry.objectives.get("rso")
    assert (entry.plugin, entry.data, entry.reference, dict(entry.defaults)) == ("xtune-rso", "pairs", True,
                                                                                  {"beta": 0.05})
    assert {"sft", "dpo", "orpo", "simpo", "kto", "reward", "ppo"} <= set(system.registry.objectives.names())


def test_hook_register_reward_functions(system):
    from xtune.objectives.reward_functions import resolve_reward_functions
    from xtune.registry import RewardFunction

    def register_reward_functions(register):
        register(RewardFunction(name="says_hello", function="my_pkg.rewards:says_hello", needs=("greeting",)))

    system.add(plugin_module("p", register_reward_functions=register_reward_functions), "p", "xtune-hello",
               "1.0")
    entry = system.registry.reward_functions.get("says_hello")
    assert (entry.plugin, entry.module, entry.needs) == ("xtune-hello", "p", ("greeting",))
    builtins = {"math_verify", "format", "overlong", "reward_model"}
    assert builtins <= set(system.registry.reward_functions.names())
    (fn,) = resolve_reward_functions(["format"], system.registry)  # names resolve through the registry
    assert fn.name == "format"


def test_hook_register_checkpoint_conversions(system):
    from xtune.models.legacy import find_legacy
    from xtune.registry import CheckpointConversion

    def register_checkpoint_conversions(register):
        register(CheckpointConversion(name="mylm_llama", model_type="mylm",
                                      architectures=("MyLMForCausalLM",),
                                      target="llama", config="my_pkg.mylm:llama_config",
                                      weights=(("^transformer\\.", "model."),)))
        register(CheckpointConversion(name="mylm_big", model_type="mylm", when=(("hidden_size", 8192),),
                                      refuse="the 8192-wide MyLM uses an attention no native model has"))

    system.add(plugin_module("p", register_checkpoint_conversions=register_checkpoint_conversions), "p",
               "xtune-mylm", "1.0")
    registry = system.registry
    assert registry.checkpoint_conversions.get("mylm_llama").plugin == "xtune-mylm"
    small = {"model_type": "mylm", "architectures": ["MyLMForCausalLM"], "hidden_size": 64}
    assert find_legacy("dir", small, registry=registry).entry.name == "mylm_llama"
    assert find_legacy("dir", small, registry=registry, trust_remote_code=True) is None  # the user's choice
    assert find_legacy("dir", dict(small, architectures=["Other"]), registry=registry) is None
    with pytest.raises(ConfigError, match="uses an attention no native model has"):
        find_legacy("dir", dict(small, hidden_size=8192), registry=registry)  # the more specific entry wins
    # the built-ins sit beside it
    builtins = {"internlm2_llama", "chatglm_glm", "baichuan2_llama"}
    assert builtins <= set(registry.checkpoint_conversions.names())


def test_checkpoint_conversion_entries_are_checked(system):
    from xtune.registry import CheckpointConversion

    def register_checkpoint_conversions(register):
        register(CheckpointConversion(name="bad", model_type="mylm", target="llama", config="my_pkg:cfg",
                                      weights=(("a", ("b", "c"), "no_module_path"),)))

    system.add(plugin_module("p", register_checkpoint_conversions=register_checkpoint_conversions), "p",
               "xtune-bad", "1.0")
    assert "bad" not in system.registry.checkpoint_conversions
    assert "weight rule" in system.info["p"].error


def test_objective_entries_are_checked(system):
    from xtune.registry import Objective

    def register_objectives(register):
        register(Objective(name="bad", loss="my_pkg.bad:Bad", data="triples"))

    system.add(plugin_module("p", register_objectives=register_objectives), "p", "xtune-bad", "1.0")
    assert "bad" not in system.registry.objectives
    assert "data must be one of" in system.info["p"].error


def test_hook_register_recipes(system, tmp_path):
    recipe_file = tmp_path / "my_model_lora_my_data_e2.py"
    recipe_file.write_text(
        "model_adapter = 'llama2'\nmethod = 'lora'\ndataset_map = 'alpaca'\nmax_epochs = 2\n")

    def register_recipes(register):
        from xtune.recipe_files import recipes_in_dir

        for recipe in recipes_in_dir(tmp_path):
            register(recipe)

    system.add(plugin_module("p", register_recipes=register_recipes), "p", "xtune-mine", "0.1")
    recipe = system.registry.recipes.get("my_model_lora_my_data_e2")
    assert (recipe.plugin, recipe.model, recipe.method, recipe.dataset, recipe.epochs) == ("xtune-mine",
        "my_model", "lora", "alpaca", 2)


def test_hook_register_commands(system, capsys):
    from xtune.cli.main import build_parser

    def register_commands(subparsers):
        p = subparsers.add_parser("hello", help="say hello")
        p.add_argument("--who", default="world")
        p.set_defaults(func=lambda args: print(f"hello {args.who}") or 0)

    system.add(plugin_module("p", register_commands=register_commands), "p", "xtune-hello", "1.0")
    args = build_parser(system).parse_args(["hello", "--who", "xtune"])
    assert args.func(args) == 0
    assert capsys.readouterr().out == "hello xtune\n"


def test_duplicate_name_names_both_plugins_and_keeps_the_first(system):
    def register_recipes(register):
        register(Recipe(name="llama2_7b_lora_alpaca_e3", path="/elsewhere/x.py"))

    system.add(plugin_module("dup", register_recipes=register_recipes), "dup", "xtune-dup", "1.0")
    reg = system.registry
    assert reg.recipes.get("llama2_7b_lora_alpaca_e3").plugin == "xtune"  # never silently overwritten
    error = system.info["dup"].error
    assert "xtune-dup" in error and "'xtune'" in error and "llama2_7b_lora_alpaca_e3" in error


def test_table_add_rejects_duplicate_directly():
    from xtune.registry import Registry

    reg = Registry()
    reg.recipes.add(Recipe(name="r", path="a.py"), plugin="first", module="m1")
    with pytest.raises(RegistryError, match="from plugin 'second' is already registered by plugin 'first'"):
        reg.recipes.add(Recipe(name="r", path="b.py"), plugin="second", module="m2")


def test_plugin_raising_is_reported_and_rolled_back(system):
    def register_dataset_maps(register):
        register(DatasetMap(name="half_done", format="alpaca"))
        raise RuntimeError("boom")

    system.add(plugin_module("bad", register_dataset_maps=register_dataset_maps), "bad", "xtune-bad", "1.0")
    reg = system.registry
    assert "half_done" not in reg.dataset_maps  # nothing half registered
    assert "alpaca" in reg.dataset_maps  # xtune keeps working
    assert "RuntimeError: boom" in system.info["bad"].error
    assert [f.name for f in system.failures()] == ["bad"]


def test_invalid_entry_is_a_plugin_failure(system):
    def register_tuning_methods(register):
        register(TuningMethod(name="broken", builder="no_colon_here"))

    system.add(plugin_module("bad", register_tuning_methods=register_tuning_methods), "bad", "xtune-bad",
               "1.0")
    system.get_registry()
    assert "builder must be 'module:function'" in system.info["bad"].error


def test_wrong_entry_type_is_rejected(system):
    def register_recipes(register):
        register(ModelAdapter(name="x", model_types=("x",)))

    system.add(plugin_module("bad", register_recipes=register_recipes), "bad", "xtune-bad", "1.0")
    system.get_registry()
    assert "where a Recipe is expected" in system.info["bad"].error


def test_misspelt_hook_is_caught_by_check_pending(system):
    def register_recipe(register):  # missing the final "s"
        pass

    system.add(plugin_module("typo", register_recipe=register_recipe), "typo", "xtune-typo", "1.0")
    with pytest.raises(pluggy.PluginValidationError, match="register_recipe"):
        system.pm.check_pending()


def test_builtins_pass_check_pending(system):
    system.pm.check_pending()


class _FakeDist:
    def __init__(self, name):
        self.name, self.version = name, "9.9"


class _FakeEntryPoint:
    def __init__(self, name, dist, target):
        self.name, self.dist, self.value, self._target = name, _FakeDist(dist), f"{name}_pkg.plugin", target

    def load(self):
        if isinstance(self._target, Exception):
            raise self._target
        return self._target


@pytest.fixture
def fake_entry_points(monkeypatch):
    def register_model_adapters(register):
        register(ModelAdapter(name="good_family", model_types=("good",)))

    eps = [
        _FakeEntryPoint("good", "xtune-good",
                        plugin_module("good_mod", register_model_adapters=register_model_adapters)),
           _FakeEntryPoint("broken", "xtune-broken", ImportError("No module named 'missing_dependency'"))]
    monkeypatch.setattr(plugins.metadata, "entry_points", lambda group: eps if group == "xtune" else [])
    return eps


def test_entry_points_load_and_import_failures_are_reported(fake_entry_points):
    s = plugins.PluginSystem()
    s.load_defaults()
    s.load_entry_points(None)
    assert s.registry.model_adapters.get("good_family").plugin == "xtune-good"
    assert "missing_dependency" in s.info["broken"].error
    assert s.info["broken"].package == "xtune-broken"


@pytest.mark.parametrize("selection, loaded",
                         [(None, {"good", "broken"}), ("", set()), ("good", {"good"}),
                          ("xtune-broken", {"broken"}), ("good, broken", {"good", "broken"})])
def test_xtune_load_plugins_selects_entry_points(fake_entry_points, selection, loaded):
    s = plugins.PluginSystem()
    s.load_entry_points(selection)
    assert set(s.info) == loaded


def test_warn_failures_names_the_plugin(fake_entry_points, capsys):
    s = plugins.PluginSystem()
    s.load_defaults()
    s.load_entry_points(None)
    s.warn_failures()
    err = capsys.readouterr().err
    assert "plugin 'broken' (xtune-broken) is disabled" in err and "XTUNE_LOAD_PLUGINS" in err


def test_a_raising_command_hook_disables_only_its_plugin(system, capsys):
    from xtune.cli.main import build_parser

    def register_commands(subparsers):
        raise RuntimeError("command hook broke")

    system.add(plugin_module("p", register_commands=register_commands), "p", "xtune-broken-cmd", "1.0")
    args = build_parser(system).parse_args(["list-cfg", "-p", "smollm2_135m"])  # other commands still work
    assert args.func is not None
    assert "failed to add its commands: RuntimeError: command hook broke" in system.info["p"].error
    system.warn_failures()
    assert "plugin 'p' (xtune-broken-cmd) is disabled" in capsys.readouterr().err


def test_a_misspelt_hook_is_a_warning_naming_the_closest_hook(system, capsys):
    def register_recipe(register):  # missing the final "s": pluggy would never call it
        pass

    system.add(plugin_module("typo", register_recipe=register_recipe), "typo", "xtune-typo", "1.0")
    assert "did you mean 'register_recipes'?" in system.info["typo"].warnings[0]
    system.warn_failures()
    assert "plugin 'typo' (xtune-typo) implements 'register_recipe'" in capsys.readouterr().err


def test_an_unknown_name_in_xtune_load_plugins_is_a_warning(fake_entry_points):
    s = plugins.PluginSystem()
    s.load_entry_points("god, broken")
    assert set(s.info) == {"broken"}
    assert s.warnings == ["XTUNE_LOAD_PLUGINS names 'god', which is no installed plugin (did you mean good?)"]


def test_tryfirst_registers_before_the_builtins_and_wrappers_apply(system):
    """Hooks go through pluggy's relay: tryfirst decides who registers a name first; a hook wrapper sees
    every plugin's call."""
    seen = []

    class Early:
        @hookimpl(tryfirst=True)
        def register_recipes(self, register):
            register(Recipe(name="llama2_7b_lora_alpaca_e3", path="/mine/llama2.py"))

    class Watcher:
        @hookimpl(wrapper=True)
        def register_chat_templates(self, register):
            seen.append("before")
            result = yield
            seen.append("after")
            return result

    system.add(Early(), "early", "xtune-early", "1.0")
    system.add(Watcher(), "watcher", "xtune-watcher", "1.0")
    assert system.registry.recipes.get("llama2_7b_lora_alpaca_e3").plugin == "xtune-early"
    assert "already registered by plugin 'xtune-early'" in system.info["xtune.default_plugins.recipes"].error
    assert seen.count("before") == seen.count("after") >= 1


def test_every_hook_is_documented_and_tested():
    """Meta-test: a hook without its heading in docs/plugins.md or without a test_hook_<name> fails here."""
    docs = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^### `?(register_\w+)`?", docs, flags=re.M))
    tests = set(re.findall(r"def test_hook_(register_\w+)\(", Path(__file__).read_text(encoding="utf-8")))
    assert HOOKS, "no hooks found"
    assert set(HOOKS) - headings == set(), "hooks without a heading in docs/plugins.md"
    assert headings - set(HOOKS) == set(), "docs/plugins.md documents hooks that do not exist"
    assert set(HOOKS) - tests == set(), "hooks without a test_hook_<name> test"
    for name in HOOKS:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), f"{name} has no docstring"
