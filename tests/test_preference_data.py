"""Preference data: the layouts of shared/data/preference_dpo, bad pairs as one Error line each, pairs
rendered through the SFT template path, pairs packed whole, and the dataset tools on pairs."""

from __future__ import annotations

import json

import pytest
from conftest import shared_path
from test_engine_fixtures import make_tokenizer

from xtune.errors import DataError
from xtune.plugins import get_registry

REGISTRY = get_registry()  # the built-in registry, passed to every call as the CLI passes its own

LAYOUTS = [("sharegpt_preference", "llamafactory_dpo_en_demo.json", "pairs", 300),
           ("sharegpt_preference", "medicalgpt_dpo_zh_500.jsonl", "pairs", 500),
           ("kto", "llamafactory_kto_en_demo.json", "unpaired", 300),
           ("alpaca_preference", "llamafactory_oaast_rm_zh.json", "pairs", 772),  # 3 rank equal answers
           ("llamafactory_v1_preference", "llamafactory_v1_dpo_demo.jsonl", "pairs", 10)]


def pair(prompt: str, chosen, rejected) -> dict:
    return {"conversations": [{"from": "human", "value": prompt}], "chosen": chosen, "rejected": rejected}


@pytest.mark.parametrize("dataset_map, name, rows, count", LAYOUTS)
def test_shared_preference_layouts(dataset_map, name, rows, count):
    from xtune.data.preference import load_items

    path = shared_path("data", "preference_dpo", name)
    skipped: list[str] = []
    items, wheres, _ = load_items({"dataset_map": dataset_map, "data_path": str(path), "rows": rows,
                                   "skip_bad_records": True}, registry=REGISTRY, progress=False,
                                  skipped=skipped)
    assert len(items) == count and len(wheres) == count
    assert all("is the same answer as rejected" in problem for problem in skipped)
    first = items[0]
    assert first["prompt"][-1]["role"] == "user" and not any(m["loss"] for m in first["prompt"])
    answers = [first["completion"]] if rows == "unpaired" else [first["chosen"], first["rejected"]]
    assert all(a and a[-1]["role"] == "assistant" and a[-1]["content"].strip() for a in answers)


UF_CHOSEN = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]
INLINE = [
    ("preference", {"prompt": "Name a colour.", "chosen": UF_CHOSEN,  # UltraFeedback: whole conversations
                    "rejected": [UF_CHOSEN[0], {"role": "assistant", "content": "Seven."}]}),
    ("preference", {"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "Seven.",
                    "system": "Be brief."}),
    ("preference", {"prompt": [{"role": "user", "content": "Name a colour."}],
                    "chosen": [{"role": "assistant", "content": "Blue."}],
                    "rejected": [{"role": "assistant", "content": "Seven."}]}),
    ("hh_rlhf", {"chosen": "\n\nHuman: Name a colour.\n\nAssistant: Blue.",
                 "rejected": "\n\nHuman: Name a colour.\n\nAssistant: Seven."}),
    ("medicalgpt_preference", {"question": "Name a colour.", "response_chosen": "Blue.",
                               "response_rejected": "Seven."}),
    ("alpaca_preference", {"instruction": "Name a colour.", "input": "", "output": ["Blue.", "Seven.", "x"]}),
    ("orca_dpo_pairs", {"system": "Be brief.", "question": "Name a colour.", "chosen": "Blue.",
                        "rejected": "Seven."}),
]


@pytest.mark.parametrize("dataset_map, record", INLINE)
def test_every_layout_gives_the_same_pair(tmp_path, dataset_map, record):
    from xtune.data.preference import load_items

    data = tmp_path / "data.json"
    data.write_text(json.dumps([record]), encoding="utf-8")
    [item], _, _ = load_items({"dataset_map": dataset_map, "data_path": str(data), "rows": "pairs"},
                              progress=False, registry=REGISTRY)
    assert [(m["role"], m["content"]) for m in item["prompt"] if m["role"] != "system"] == [
        ("user", "Name a colour.")]
    assert [m["content"] for m in item["chosen"]] == ["Blue."]
    assert [m["content"] for m in item["rejected"]] == ["Seven."]
    assert ("system" in record) == (item["prompt"][0]["role"] == "system")


@pytest.mark.parametrize("record, field", [
    (pair("hi", {"from": "gpt", "value": "same"}, {"from": "gpt", "value": "same"}), "chosen"),
    (pair("hi", {"from": "gpt", "value": "a"}, None), "rejected"),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "x"}],
      "chosen": "a", "rejected": "b"}, "prompt"),
])
def test_bad_pairs_are_one_error_line_naming_file_record_and_field(tmp_path, record, field):
    from xtune.data.preference import load_items

    data = tmp_path / "pairs.json"
    data.write_text(json.dumps([pair("ok", "a", "b"), record]), encoding="utf-8")
    with pytest.raises(DataError) as err:
        load_items({"dataset_map": "sharegpt_preference", "data_path": str(data), "rows": "pairs"},
                   progress=False, registry=REGISTRY)
    message = str(err.value)
    assert "pairs.json" in message and "record 1" in message and f"field {field!r}" in message
    assert "record 0" not in message


def test_sft_data_is_refused_for_a_pair_objective(tmp_path):
    from mmengine.config import Config

    from xtune.engine.objective_setup import objective_problems
    from xtune.plugins import get_registry

    cfg = Config(dict(objective=dict(type="dpo"), train_dataset=dict(dataset_map="alpaca"),
                      optim_wrapper=dict(accumulative_counts=1), method_cfg=dict(type="lora")))
    problems = objective_problems(cfg, get_registry(), None)
    assert any("trains on pairs but dataset map 'alpaca' yields sft" in p for p in problems), problems
    cfg.objective = dict(type="dpo", betta=0.1)
    assert "did you mean beta" in objective_problems(cfg, get_registry(), None)[0]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tok"))


def test_pairs_render_and_tokenize_like_sft_conversations(tmp_path, tokenizer):
    """The chosen sequence of a pair is token for token the SFT row of the same conversation trained on its
    last answer: one template path for both."""
    from xtune.data.pipeline import build_train_dataset

    answer, other = "the cat sat on a mat", "dog ran"
    data = tmp_path / "pairs.json"
    data.write_text(json.dumps([pair("write the cat", answer, other)]), encoding="utf-8")
    rows = build_train_dataset({"dataset_map": "sharegpt_preference", "data_path": str(data),
                                "rows": "pairs", "prompt_template": "llama2_chat", "max_length": 64},
                               tokenizer, use_cache=False, registry=REGISTRY)
    sft_data = tmp_path / "sft.json"
    sft_data.write_text(json.dumps([{"instruction": "write the cat", "output": answer}]), encoding="utf-8")
    sft = build_train_dataset({"dataset_map": "alpaca", "data_path": str(sft_data),
                               "prompt_template": "llama2_chat", "max_length": 64}, tokenizer,
                              registry=REGISTRY, use_cache=False)
    n = len(sft[0]["input_ids"])
    assert rows[0]["input_ids"][:n] == sft[0]["input_ids"] and rows[0]["labels"][:n] == sft[0]["labels"]
    assert rows[0]["position_ids"][n] == 0  # the rejected sequence starts over
    from xtune.data.inspect import dataset_stats

    stats = dataset_stats(rows)  # an unpacked pair row is not a packed row: no fill ratio against max_length
    assert not stats["packed"] and "fill_ratio" not in stats and stats["samples"] == 2


def test_packing_keeps_pairs_whole_and_kto_labels_with_them(tmp_path, tokenizer):
    from xtune.data.packing import sample_lengths
    from xtune.data.pipeline import build_train_dataset

    words = "the cat sat on a mat and the dog ran in the park".split()
    records = [{"prompt": f"write {w}", "completion": " ".join(words[i % 5:]), "label": i % 3 != 0}
               for i, w in enumerate(words)]
    data = tmp_path / "kto.json"
    data.write_text(json.dumps(records), encoding="utf-8")
    rows = build_train_dataset({"dataset_map": "kto", "data_path": str(data), "rows": "unpaired",
                                "prompt_template": "llama2_chat", "max_length": 48,
                                "pack_to_max_length": True}, tokenizer, use_cache=False, registry=REGISTRY)
    assert len(rows) < len(records)  # several units per row
    labels = []
    for row in rows:
        lengths = sample_lengths(row["position_ids"])
        assert len(lengths) == 2 * len(row["unit_labels"]) and sum(lengths) <= 96
        labels += row["unit_labels"]
    assert sorted(labels) == sorted(int(r["label"]) for r in records)


def test_check_custom_dataset_and_log_dataset_show_pairs(tmp_path, capsys):
    from xtune.cli.main import main

    data = shared_path("data", "preference_dpo", "llamafactory_dpo_en_demo.json")
    assert main(["check-custom-dataset", "--data", str(data), "--format", "sharegpt_preference",
                 "--template", "llama2_chat"]) == 0
    out = capsys.readouterr().out
    assert "OK: every record" in out and "records:            300" in out
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([pair("hi", "same", "same")]), encoding="utf-8")
    assert main(["check-custom-dataset", "--data", str(bad), "--format", "sharegpt_preference"]) == 2
    assert "is the same answer as rejected" in capsys.readouterr().err
