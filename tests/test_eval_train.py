"""`evaluation_data` in a recipe: `xtune train` scores the test file as `xtune eval` does, logs it with the
losses, and a recipe without it evaluates nothing. The run is two LoRA steps of the SmolLM2 self-cognition
recipe on the tiny model of test_export_helpers."""

from __future__ import annotations

import json

import pytest
from test_export_helpers import RECIPE, load_recipe_cfg, recipe_options, tiny_model_dir

from xtune.cli.main import main

TEST_SET = [{"instruction": "Who are you?", "output": "I am {{name}}, made by {{author}}."},
            {"instruction": "你是谁？", "output": "我是 {{name}}，由 {{author}} 开发。"},
            {"instruction": "What is your name?", "output": "My name is {{name}}."}]


def _test_file(tmp_path):
    path = tmp_path / "held_out.json"
    path.write_text(json.dumps(TEST_SET, ensure_ascii=False), encoding="utf-8")
    return path


def test_a_recipe_without_evaluation_data_evaluates_nothing(tmp_path):
    from xtune.engine.evaluation import evaluation_problems
    from xtune.plugins import get_registry

    cfg = load_recipe_cfg(tiny_model_dir(tmp_path / "base"))
    assert cfg.evaluation_data is None and cfg.evaluation_steps == 0
    assert evaluation_problems(cfg, get_registry()) == []


def test_a_preference_recipe_reads_its_test_file_by_its_own_fields(tmp_path):
    """A DPO recipe's dataset map reads pairs; its test file (alpaca here) is read by its own layout."""
    from xtune.engine.evaluation import evaluation_problems, load_records
    from xtune.plugins import get_registry
    from xtune.recipe import load_recipe
    from xtune.recipe_files import resolve_recipe

    registry = get_registry()
    cfg = load_recipe(resolve_recipe("smollm2_135m_instruct_lora_dpo_ultrafeedback_e1", registry),
                      [f"evaluation_data={_test_file(tmp_path)}"])
    assert evaluation_problems(cfg, registry) == []
    assert [r.reference for r in load_records(cfg, registry)][2] == "My name is {{name}}."


@pytest.mark.parametrize("option, expect", [
    ("evaluation_data=MISSING", "missing.json' does not exist"),
    ("evaluation_data=EMPTY_ANSWERS", "has no reference answer"),
    ("evaluation_steps=-1", "evaluation_steps=-1 must be an integer of at least 0"),
    ("evaluation_dataset_map=alpacca", "unknown dataset map 'alpacca'"),
])
def test_bad_evaluation_settings_stop_the_run_before_the_model_loads(tmp_path, capsys, option, expect):
    base = tiny_model_dir(tmp_path / "base")
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps([{"instruction": "Hi", "output": ""}]), encoding="utf-8")
    option = option.replace("MISSING", str(tmp_path / "missing.json")).replace("EMPTY_ANSWERS", str(empty))
    extra = [] if option.startswith("evaluation_data=") else [f"evaluation_data={_test_file(tmp_path)}"]
    code = main(["train", RECIPE, "--work-dir", str(tmp_path / "wd"), "--cfg-options",
                 *recipe_options(base, max_steps=1), option, *extra])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("Error: ") and expect in err[-1], err
    assert not (tmp_path / "wd").exists()


@pytest.mark.integration
def test_train_scores_evaluation_data_like_xtune_eval_and_logs_it_with_the_losses(tmp_path, capsys):
    base = tiny_model_dir(tmp_path / "base")
    data = _test_file(tmp_path)
    work = tmp_path / "wd"
    options = recipe_options(base, max_steps=2, accumulative_counts=1, max_length=128, save_steps=2,
                             evaluation_inputs="[]", log_interval=1, lr=1e-2, warmup_ratio=0.0,
                             self_cognition_name="Nova", evaluation_data=data, evaluation_steps=1,
                             evaluation_max_new_tokens=5)
    assert main(["train", RECIPE, "--work-dir", str(work), "--cfg-options", *options]) == 0
    err = capsys.readouterr().err
    assert "evaluation at step 1 on held_out.json (3 records" in err and "evaluation at step 2" in err
    history = json.loads((work / "loss_history.json").read_text())
    assert [e["step"] for e in history["evaluation"]] == [1, 2] and len(history["train"]) == 2
    assert set(history["evaluation"][0]) == {"step", "bleu-4", "rouge-1", "rouge-2", "rouge-l", "exact_match"}
    rows = [json.loads(line) for line in (work / "evaluation" / "step_2.jsonl").read_text().splitlines()]
    assert [r["reference"] for r in rows][:2] == ["I am Nova, made by the xtune team.",
                                                  "我是 Nova，由 the xtune team 开发。"]
    # the same numbers from `xtune eval` on the exported adapter (the recipe's template is the model's own)
    assert main(["eval", str(base), "--adapter", str(work / "hf"), "--data", str(data), "--dataset-map",
                 "self_cognition", "--self-cognition-name", "Nova", "--max-new-tokens", "5", "--dtype",
                 "float32", "--json", "--out", str(tmp_path / "eval.jsonl")]) == 0
    found = json.loads(capsys.readouterr().out)
    again = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in again] == [r["prediction"] for r in rows]
    assert [r["prompt"] for r in again] == [r["prompt"] for r in rows]
    final = history["evaluation"][-1]
    for key in ("bleu-4", "rouge-1", "rouge-2", "rouge-l", "exact_match"):
        assert found[key] == pytest.approx(final[key], abs=1e-9), key
    log_text = "".join(p.read_text() for p in work.rglob("*.log"))
    assert "eval_rouge-l" in log_text
