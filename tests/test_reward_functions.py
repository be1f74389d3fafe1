"""Reward functions for online RL (grpo): the `register_reward_functions` hook, the built-ins (math-verify on
GSM8K and LaTeX answers, the format rule, DAPO's overlong penalty, an xtune reward model), user functions by
import path or file, and the checks on settings and on what a function returns."""

from __future__ import annotations

import json
import math
import textwrap
import types

import pytest

from xtune import plugins
from xtune.errors import ConfigError, DataError, UsageError
from xtune.hookspecs import hookimpl
from xtune.objectives.reward_functions import RewardFn, resolve_reward_functions
from xtune.registry import RewardFunction

GIVEN = dict(completion_ids=[[1, 2]], max_completion_length=16, prompt_messages=[[{"role": "user",
                                                                                       "content": "q"}]])


@pytest.fixture(scope="module")
def system():
    s = plugins.PluginSystem()
    s.load_defaults()
    return s


def call(fn: RewardFn, completions: list[str], **columns) -> list[float | None]:
    n = len(completions)
    kwargs = dict(completion_ids=[[7] * 3] * n, max_completion_length=16,
                  prompt_messages=[[{"role": "user", "content": "q"}]] * n)
    return fn(["q"] * n, completions, **{**kwargs, **columns})


def one(spec, registry) -> RewardFn:
    (fn,) = resolve_reward_functions([spec], registry)
    return fn


def test_builtins_are_registered_by_xtune(system):
    table = system.registry.reward_functions
    assert not system.failures()
    assert {"math_verify", "format", "overlong", "reward_model"} <= set(table.names())
    entry = table.get("math_verify")
    assert (entry.plugin, entry.module, entry.needs) == ("xtune", "xtune.default_plugins.rewards",
                                                         ("answer",))
    assert system.info["xtune.default_plugins.rewards"].hooks == ["register_reward_functions"]


@pytest.mark.parametrize("completion, reward", [
    ("Natalia sold 48 + 24 = 72 clips.\n#### 72", 1.0),
    ("She sold 48/2 = 24 in May, so 48 + 24 = 72 in all. The answer is 72.", 1.0),
    ("Altogether: $\\boxed{72}$ clips", 1.0),
    ("The answer is 73.", 0.0),
    ("<think>48 + 24</think> <answer>72</answer>", 1.0),
    ("<think>48 + 24 = 72</think>\n<answer>70</answer>", 0.0),
    ("<think>48 + 24</think><answer>So $\\boxed{72}$.</answer>", 1.0),
    ("<think>48 + 24 is 72", 1.0),
    ("", 0.0),
])
def test_math_verify_reads_gsm8k_style_answers(system, completion, reward):
    fn = one("math_verify", system.registry)
    assert fn.needs == ("answer",)
    # the reference as the data maps give it, as GSM8K writes it, and as a worked solution (its last number)
    for reference in ("72", "#### 72", "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72",
                      "In May she sold 24, so 48 + 24 = 72"):
        assert call(fn, [completion], answer=[reference]) == [reward], reference


def test_math_verify_compares_latex_answers_as_mathematics(system):
    fn = one("math_verify", system.registry)
    completions = ["So $\\boxed{\\dfrac{3}{4}}$.", "the probability is 0.75", "$\\frac{6}{8}$",
                   "\\boxed{4/3}", "\\boxed{3\\sqrt{2}}", "\\boxed{3}"]
    assert call(fn, completions, answer=["\\frac{3}{4}"] * 4 + ["3\\sqrt{2}"] * 2) == [1, 1, 1, 0, 1, 0]


def test_math_verify_is_none_where_the_reference_does_not_parse(system):
    fn = one("math_verify", system.registry)
    assert call(fn, ["72", "72", "72"], answer=["no answer here", None, ""]) == [None, None, None]


def test_format_rule_and_its_pattern_setting(system):
    fn = one("format", system.registry)
    good = "<think>\nadd them\n</think>\n<answer>72</answer>\n"
    assert call(fn, [good, "<answer>72</answer>", "72", "<think>a</think><answer>7</answer> more"]) == \
        [1.0, 0.0, 0.0, 0.0]
    mine = one(dict(type="format", pattern=r"^Answer: \d+$"), system.registry)
    assert call(mine, ["Answer: 72", "Answer: seventy"]) == [1.0, 0.0]
    with pytest.raises(ConfigError, match="pattern '\\(' is no regular expression"):
        one(dict(type="format", pattern="("), system.registry)


def test_overlong_is_dapos_soft_penalty(system):
    fn = one(dict(type="overlong", overlong_buffer=4), system.registry)
    lengths = [0, 12, 13, 14, 16, 17]
    values = fn(["q"] * 6, ["x"] * 6, completion_ids=[[5] * n for n in lengths], max_completion_length=16,
                prompt_messages=[[]] * 6)
    assert values == [0.0, 0.0, -0.25, -0.5, -1.0, -1.0]
    with pytest.raises(ConfigError, match="overlong_buffer=64 exceeds max_completion_length=16"):
        call(one("overlong", system.registry), ["x"])
    with pytest.raises(ConfigError, match="overlong_buffer=0 must be a positive"):
        one(dict(type="overlong", overlong_buffer=0), system.registry)


def test_a_function_by_import_path_and_by_file(system, tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text(textwrap.dedent("""
        def exact(completions, answer, scale=1.0, **kwargs):
            return [scale * (c.strip() == a) for c, a in zip(completions, answer)]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    by_path, by_file = resolve_reward_functions(["my_rewards:exact", dict(type="./my_rewards.py:exact",
                                                                          scale=2.0)], system.registry)
    assert (by_path.name, by_path.needs, by_file.name, by_file.settings) == ("exact", ("answer",), "exact_2",
                                                                             {"scale": 2.0})
    assert call(by_path, ["72 ", "7"], answer=["72", "72"]) == [1.0, 0.0]
    assert call(by_file, ["72"], answer=["72"]) == [2.0]
    with pytest.raises(ConfigError, match="no function 'exakt'.*did you mean: exact"):
        resolve_reward_functions(["my_rewards.py:exakt"], system.registry)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_reward_functions(["elsewhere/rewards.py:exact"], system.registry)
    with pytest.raises(ConfigError, match="cannot import 'no_such_pkg.mod'"):
        resolve_reward_functions(["no_such_pkg.mod:fn"], system.registry)


def test_recipe_mistakes_are_one_error_before_training(system):
    with pytest.raises(ConfigError, match="unknown reward function 'fromat'.*did you mean: format"):
        resolve_reward_functions(["fromat"], system.registry)
    with pytest.raises(ConfigError, match="'format' has no setting 'patern'.*did you mean: pattern"):
        resolve_reward_functions([dict(type="format", patern="x")], system.registry)
    with pytest.raises(ConfigError, match="reward_funcs is empty"):
        resolve_reward_functions([], system.registry)
    with pytest.raises(ConfigError, match="neither a registered name"):
        resolve_reward_functions([dict(pattern="x")], system.registry)

    def no_kwargs(prompts, completions):
        return [0.0] * len(completions)

    with pytest.raises(ConfigError, match="must accept \\*\\*kwargs"):
        resolve_reward_functions([no_kwargs], system.registry)


def test_what_a_function_returns_is_checked(system):
    def returning(values):
        def fn(prompts, completions, **kwargs):
            return values
        return RewardFn(name="mine", function=fn)

    assert call(returning([1, None, float("nan"), True]), ["a"] * 4) == [1.0, None, None, 1.0]
    for values, message in (([1.0], "returned 1 values for 2 completions"), ("1.0", "returned a str"),
                            ([1.0, "high"], "returned 'high' \\(str\\) for completion 1"),
                            ([1.0, math.inf], "returned inf for completion 1: rewards must be finite")):
        with pytest.raises(UsageError, match=f"reward function 'mine' {message}"):
            call(returning(values), ["a", "b"])


def test_a_missing_column_is_named(system):
    fn = one("math_verify", system.registry)
    with pytest.raises(DataError, match="'math_verify' needs the record column\\(s\\) answer.*: solution"):
        call(fn, ["72"], solution=["72"])


def plugin_module(**hooks) -> types.ModuleType:
    module = types.ModuleType("p")
    for name, fn in hooks.items():
        setattr(module, name, hookimpl(fn))
    return module


def test_a_plugins_reward_function_is_used_by_a_recipe(tmp_path, monkeypatch):
    (tmp_path / "acme_rewards.py").write_text(textwrap.dedent("""
        def shorter(prompts, completions, limit=10, **kwargs):
            return [1.0 if len(c) <= limit else 0.0 for c in completions]
    """))
    monkeypatch.syspath_prepend(str(tmp_path))

    def register_reward_functions(register):
        register(RewardFunction(name="shorter", function="acme_rewards:shorter", description="short answers"))

    s = plugins.PluginSystem()
    s.load_defaults()
    s.add(plugin_module(register_reward_functions=register_reward_functions), "p", "xtune-acme", "1.0")
    assert s.registry.reward_functions.get("shorter").plugin == "xtune-acme"
    assert s.info["p"].registered == {"reward_functions": ["shorter"]}
    objective = dict(type="grpo", reward_funcs=[dict(type="shorter", limit=3), "format"],
                     reward_weights=[1.0, 1.0])
    fns = resolve_reward_functions(objective["reward_funcs"], s.registry)
    assert [f.name for f in fns] == ["shorter", "format"]
    assert call(fns[0], ["abc", "abcd"]) == [1.0, 0.0]


@pytest.mark.parametrize("entry, error", [
    (RewardFunction(name="bad", function="no_colon"), "function must be 'module:function'"),
    (RewardFunction(name="a:b", function="m:f"), "must not contain ':'"),
    (RewardFunction(name="bad", function="m:f", needs="answer"), "needs must be a tuple"),
])
def test_reward_function_entries_are_checked(entry, error):
    s = plugins.PluginSystem()
    s.load_defaults()
    s.add(plugin_module(register_reward_functions=lambda register: register(entry)), "p", "xtune-bad", "1.0")
    assert "bad" not in s.registry.reward_functions and error in s.info["p"].error


def test_the_reference_plugins_reward_function():
    reference = pytest.importorskip("xtune_tinyllama.plugin")
    s = plugins.PluginSystem()
    s.load_defaults()
    s.add(reference, "tinyllama", "xtune-tinyllama", "0.1.0")
    assert not s.failures()
    assert s.registry.reward_functions.get("ngram_repetition").plugin == "xtune-tinyllama"
    fn = one(dict(type="ngram_repetition", ngram_size=2), s.registry)
    assert call(fn, ["a b a b a b", "one two three", "hi"]) == pytest.approx([-0.6, 0.0, 0.0])
    with pytest.raises(ConfigError, match="max_penalty=1 must be <= 0"):
        one(dict(type="ngram_repetition", max_penalty=1), s.registry)


@pytest.fixture(scope="module")
def tiny_reward_model(tmp_path_factory):
    """A random tiny Llama sequence classifier saved as an xtune export (xtune_info.json names its
    template)."""
    import torch
    from test_engine_fixtures import make_tokenizer
    from transformers import LlamaConfig, LlamaForSequenceClassification

    folder = tmp_path_factory.mktemp("rm")
    tok = make_tokenizer(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1, pad_token_id=3)
    LlamaForSequenceClassification(config).save_pretrained(folder)
    (folder / "xtune_info.json").write_text(json.dumps({"prompt_template": "llama2_chat"}))
    return folder


@pytest.mark.integration  # imports torch and transformers: seconds
def test_reward_model_scores_each_conversation_loading_the_model_once(system, tiny_reward_model):
    from xtune.objectives import reward_builtins
    from xtune.objectives.reward import score_conversations

    fn = one(dict(type="reward_model", path=str(tiny_reward_model)), system.registry)
    messages = [[{"role": "user", "content": "write the cat"}]] * 2
    completions = ["the cat sat", "dog ran in the park"]
    reward_builtins._loaded.cache_clear()
    first = fn(["write the cat"] * 2, completions, **dict(GIVEN, prompt_messages=messages))
    as_json = [json.dumps(m) for m in messages]  # the collator's form of the same messages
    again = fn(["write the cat"] * 2, completions, **dict(GIVEN, prompt_messages=as_json))
    assert reward_builtins._loaded.cache_info().misses == 1 and first == again
    model, tokenizer = reward_builtins._loaded(str(tiny_reward_model), "float32")
    conversations = [m + [{"role": "assistant", "content": c}]
                     for m, c in zip(messages, completions, strict=True)]
    expected = score_conversations(model, tokenizer, "llama2_chat", conversations, registry=system.registry)
    assert first == pytest.approx(expected) and first[0] != first[1]


def test_reward_model_settings_are_checked(system, tmp_path):
    with pytest.raises(ConfigError, match="needs path=FOLDER"):
        one("reward_model", system.registry)
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForSequenceClassification"]}))
    with pytest.raises(ConfigError, match="does not say which chat template"):
        one(dict(type="reward_model", path=str(tmp_path)), system.registry)
    fn = one(dict(type="reward_model", path=str(tmp_path), template="llama2_chat"), system.registry)
    assert fn.settings["template"] == "llama2_chat"
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(UsageError, match="is not a reward model"):
        one(dict(type="reward_model", path=str(tmp_path), template="llama2_chat"), system.registry)
