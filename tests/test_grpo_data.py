"""Prompt data for online RL (GRPO): the prompt maps (gsm8k, gsm8k_alpaca, math, prompt) give the same prompt
and reference answer from each layout, the shared GSM8K file's answers are its solutions' last numbers, bad
records are one error line naming file, record and field, and the prompt rows and batches carry each
record's columns (JSON) beside the prompt messages, fingerprinted with the settings that change them."""

from __future__ import annotations

import json

import pytest
from conftest import shared_path
from test_engine_fixtures import make_tokenizer

from xtune.errors import ConfigError, DataError
from xtune.plugins import get_registry

REGISTRY = get_registry()
QUESTION = "Tom has 3 apples and buys 1,197 more. How many apples does he have?"


def load(tmp_path, dataset_map: str, records: list[dict], name: str = "data.json", **settings):
    from xtune.data.preference import load_items

    data = tmp_path / name
    data.write_text(json.dumps(records), encoding="utf-8")
    return load_items({"dataset_map": dataset_map, "data_path": str(data), "rows": "prompts", **settings},
                      registry=REGISTRY, progress=False)


def test_shared_gsm8k_alpaca_answers_are_the_solutions_last_numbers():
    from xtune.data.preference import load_items

    path = shared_path("data", "alpaca", "gururise_gsm_8k_train_alpaca_format.json")
    cfg = {"dataset_map": "gsm8k_alpaca", "data_path": str(path), "rows": "prompts",
           "system": "Answer in <answer></answer>."}
    items, wheres, _ = load_items(cfg, registry=REGISTRY, progress=False)
    assert len(items) == len(wheres) == 7473  # every record has a number to take as its answer
    first = items[0]
    assert [m["role"] for m in first["prompt"]] == ["system", "user"]
    assert first["prompt"][0]["content"] == "Answer in <answer></answer>."
    assert first["prompt"][1]["content"].startswith("Natalia sold clips to 48 of her friends")
    assert not any(m["loss"] for item in items for m in item["prompt"])
    answers = [item["columns"]["answer"] for item in items]
    assert answers[:3] == ["72", "10", "5"]  # "... = $10." and "... = $5 more." keep the number only
    assert len([float(a) for a in answers]) == 7473 and "-7" in answers  # numbers; negatives stay negative
    assert not any("," in a for a in answers)  # "$1,200" -> "1200"
    assert all(set(item["columns"]) == {"answer"} for item in items)


MATH_SOLUTION = r"First $\boxed{3}$ apples, then $3 + 1197 = \boxed{1200}$."
LAYOUTS = [
    ("gsm8k", {"question": QUESTION, "answer": "3 + 1197 = <<3+1197=1200>>1200\n#### 1,200"}),
    ("gsm8k_alpaca", {"instruction": QUESTION, "input": "", "output": "He has 3 + 1,197 = 1,200 apples."}),
    ("math", {"problem": QUESTION, "solution": MATH_SOLUTION, "level": "Level 1"}),
    ("math", {"problem": QUESTION, "solution": "no box here", "answer": "1200"}),  # MATH-500: its own answer
    ("prompt", {"prompt": QUESTION, "answer": "1200"}),
    ("prompt", {"prompt": [{"role": "user", "content": QUESTION}], "answer": "1200"}),
]


@pytest.mark.parametrize("dataset_map, record", LAYOUTS)
def test_every_prompt_layout_gives_the_same_prompt_and_answer(tmp_path, dataset_map, record):
    [item], _, _ = load(tmp_path, dataset_map, [record])
    assert [(m["role"], m["content"], m["loss"]) for m in item["prompt"]] == [("user", QUESTION, False)]
    assert item["columns"]["answer"] == "1200"
    [with_system], _, _ = load(tmp_path, dataset_map, [{**record, "system": "Think first."}])
    assert with_system["prompt"][0] == {"role": "system", "content": "Think first.", "loss": False}


def test_math_takes_the_last_boxed_answer_with_its_braces():
    from xtune.data.prompt_formats import last_boxed, last_number

    assert last_boxed(r"so $x = \boxed{\frac{1}{2}}$ and then \boxed {\sqrt{2}}.") == r"\sqrt{2}"
    assert last_boxed(r"\boxed{1} then an unclosed \boxed{2") == "1"
    assert last_boxed("none") is None
    assert last_number("48-24 = 24 and 1,2,3 then 0.25.") == "0.25"
    assert last_number("N = -51, the largest is -47.") == "-47"


def test_the_generic_prompt_map_carries_every_other_column(tmp_path):
    record = {"prompt": "Say hi.", "system": "Be brief.", "answer": "hi", "level": 3, "tests": ["a", "b"],
              "meta": {"source": "x"}}
    [item], _, _ = load(tmp_path, "prompt", [record])
    assert item["columns"] == {"answer": "hi", "level": 3, "tests": ["a", "b"], "meta": {"source": "x"}}
    assert item["prompt"][0]["content"] == "Be brief."
    [renamed], _, _ = load(tmp_path, "prompt", [{"question": "Say hi.", "answer": "hi"}],
                           columns={"prompt": "question"})
    assert renamed["prompt"][-1]["content"] == "Say hi." and renamed["columns"] == {"answer": "hi"}


BAD = [
    ("gsm8k", {"answer": "#### 3"}, "question", "is missing"),
    ("gsm8k", {"question": "q"}, "answer", "is missing"),
    ("gsm8k", {"question": "q", "answer": "it is 3"}, "answer", "#### <answer>"),
    ("gsm8k_alpaca", {"instruction": "q", "input": "", "output": "no number"}, "output", "no number"),
    ("gsm8k_alpaca", {"input": "", "output": "1"}, "instruction", "is missing"),
    ("math", {"problem": "p", "solution": "no box"}, "solution", "boxed"),
    ("prompt", {"question": "q", "answer": "1"}, "prompt", "is missing"),
    ("prompt", {"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
     "prompt", "ends on a user turn"),
    ("prompt", {"prompt": "q", "completions": "x"}, "completions", "called with already"),
]


@pytest.mark.parametrize("dataset_map, record, field, why", BAD)
def test_bad_prompt_records_are_one_error_line_naming_file_record_and_field(tmp_path, dataset_map, record,
                                                                            field, why):
    good = LAYOUTS[[name for name, _ in LAYOUTS].index(dataset_map)][1]
    with pytest.raises(DataError) as err:
        load(tmp_path, dataset_map, [good, record], name="prompts.json")
    message = str(err.value)
    assert "prompts.json" in message and "record 1" in message and f"field {field!r}" in message, message
    assert why in message and "record 0" not in message


def test_a_record_without_a_column_the_rewards_read_is_named(tmp_path):
    records = [{"prompt": "a", "answer": "1"}, {"prompt": "b", "id": 7}]
    with pytest.raises(DataError) as err:
        load(tmp_path, "prompt", records, required_columns=["answer"])
    assert "record 1" in str(err.value) and "field 'answer': is missing" in str(err.value)
    assert "record 0" not in str(err.value)
    items, _, _ = load(tmp_path, "prompt", records, required_columns=["answer"], skip_bad_records=True)
    assert [i["columns"] for i in items] == [{"answer": "1"}]
    with pytest.raises(ConfigError, match="required_columns"):
        load(tmp_path, "prompt", records, required_columns=[3])


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def test_prompt_rows_and_batches_carry_the_columns(tmp_path, tokenizer):
    """A prompt row is the rendered prompt (nothing trained) with its messages and columns as JSON; the
    batch is left-padded with both beside it, in row order. Chat data used as prompts (PPO's) has none."""
    from xtune.data.pipeline import build_train_dataset
    from xtune.data.preference_collate import collator_for

    data = tmp_path / "gsm8k.jsonl"
    data.write_text("\n".join(json.dumps({"question": q, "answer": f"so\n#### {a}"})
                              for q, a in [("write the cat", "1,000"), ("the dog ran in the park", "-2")]))
    cfg = {"dataset_map": "gsm8k", "data_path": str(data), "rows": "prompts",
           "prompt_template": "llama2_chat", "max_length": 64, "system": "Be brief."}
    rows = build_train_dataset(cfg, tokenizer, use_cache=False, registry=REGISTRY)
    assert set(rows.column_names) == {"input_ids", "labels", "prompt_messages", "columns"}
    assert [json.loads(r["columns"]) for r in rows] == [{"answer": "1000"}, {"answer": "-2"}]
    assert json.loads(rows[0]["prompt_messages"]) == [{"role": "system", "content": "Be brief."},
                                                      {"role": "user", "content": "write the cat"}]
    assert all(label == -100 for r in rows for label in r["labels"])
    batch = collator_for(cfg, tokenizer)([rows[0], rows[1]])
    assert set(batch) == {"input_ids", "attention_mask", "prompt_messages", "columns"}
    assert batch["columns"] == [rows[0]["columns"], rows[1]["columns"]]
    mask = batch["attention_mask"]
    assert mask[0, 0] == 0 and mask[:, -1].tolist() == [1, 1]  # left-padded for generation
    sft = tmp_path / "sft.json"
    sft.write_text(json.dumps([{"instruction": "write the cat", "output": "a cat"}]), encoding="utf-8")
    ppo = build_train_dataset({**cfg, "dataset_map": "alpaca", "data_path": str(sft)}, tokenizer,
                              use_cache=False, registry=REGISTRY)
    assert ppo[0]["columns"] == "{}" and ppo[0]["prompt_messages"] == rows[0]["prompt_messages"]


def test_the_cache_key_covers_what_changes_the_prompt_rows(tmp_path, tokenizer):
    """A cached build is not reused when the system prompt or the required columns change: the second would
    otherwise skip the check that names the record without the column."""
    from xtune.data.pipeline import build_train_dataset

    data = tmp_path / "p.json"
    data.write_text(json.dumps([{"prompt": "write the cat", "answer": "1"}, {"prompt": "dog ran"}]))
    cfg = {"dataset_map": "prompt", "data_path": str(data), "rows": "prompts",
           "prompt_template": "llama2_chat", "max_length": 64, "cache_dir": str(tmp_path / "cache")}
    first = build_train_dataset(cfg, tokenizer, registry=REGISTRY, progress=False)
    assert [json.loads(c) for c in first["columns"]] == [{"answer": "1"}, {}]
    other = build_train_dataset({**cfg, "system": "Be brief."}, tokenizer, registry=REGISTRY, progress=False)
    assert "Be brief." in other[0]["prompt_messages"] and "Be brief." not in first[0]["prompt_messages"]
    with pytest.raises(DataError, match="record 1.*field 'answer'"):
        build_train_dataset({**cfg, "required_columns": ["answer"]}, tokenizer, registry=REGISTRY,
                            progress=False)


def test_prompt_maps_train_prompt_objectives_only(tmp_path):
    from mmengine.config import Config

    from xtune.engine.objective_setup import objective_problems

    def problems(objective: dict | None) -> list[str]:
        cfg = Config(dict(train_dataset=dict(dataset_map="gsm8k_alpaca"), optim_wrapper=dict(
            accumulative_counts=1), method_cfg=dict(type="lora"), **({"objective": objective} if objective
                                                                     else {})))
        return objective_problems(cfg, REGISTRY, None)

    assert any("trains on sft but dataset map 'gsm8k_alpaca' yields prompts" in p for p in problems(None))
    assert any("yields prompts" in p for p in problems(dict(type="dpo")))
    assert not any("yields" in p for p in problems(dict(type="ppo", reward_model="rm")))


def test_the_rewards_needs_become_required_columns():
    """`dataset_cfg` asks every prompt record for the columns the recipe's registered reward functions read
    (user functions declare none)."""
    from xtune.data.from_recipe import dataset_cfg
    from xtune.registry import Registry, RewardFunction

    registry = Registry()
    for entry in REGISTRY.objectives:
        registry.objectives.add(entry, entry.plugin, entry.module)
    registry.reward_functions.add(RewardFunction(name="exact", function="m:exact", needs=("answer",)),
                                  "test", "test")
    registry.reward_functions.add(RewardFunction(name="shape", function="m:shape"), "test", "test")
    recipe = {"train_dataset": {"dataset_map": "gsm8k"},  # any objective on prompts
              "objective": {"type": "ppo", "reward_funcs": ["shape", {"type": "exact"}, "pkg.mod:fn"]}}
    assert dataset_cfg(recipe, registry)["required_columns"] == ["answer"]
    recipe["objective"]["reward_funcs"] = ["shape"]
    assert "required_columns" not in dataset_cfg(recipe, registry)


def test_check_custom_dataset_shows_prompt_records(tmp_path, capsys):
    from xtune.cli.main import main

    data = tmp_path / "gsm8k.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"q{i}", "answer": f"#### {i}"}) for i in range(3)))
    assert main(["check-custom-dataset", "--data", str(data), "--format", "gsm8k",
                 "--template", "llama2_chat"]) == 0
    out = capsys.readouterr().out
    assert "OK: every record" in out and "records:            3" in out


def test_the_data_summary_of_prompts_speaks_of_prompts():
    """Prompt rows have no trained token (the policy answers them): the summary says what was dropped, why."""
    from xtune.data.inspect import format_stats

    stats = {"records": 3, "samples": 2, "rows": 2, "tokens": 20, "trained_tokens": 0, "dropped": 1,
             "truncated": 0, "packed": False, "prompts": True, "max_length": 64, "mean_sample_tokens": 10.0,
             "max_sample_tokens": 12, "length_histogram": [(1, 64, 2)]}
    text = format_stats(stats)
    assert "prompts kept:     2 (dropped 1: longer than max_length 64)" in text
    assert "trained tokens" not in text and "no trained token left" not in text
    assert "trained tokens:   0" in format_stats({**stats, "prompts": False})
