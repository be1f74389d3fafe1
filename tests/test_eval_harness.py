"""`xtune eval --tasks`: lm-evaluation-harness tasks on a model or base + adapter, offline, with lm-eval's
own numbers. The task is the small multiple-choice one in tests/assets/lm_eval (a YAML of lm-eval's format
and a local jsonl file); the model is the tiny one of test_export_helpers. The whole module skips when
lm-eval is not installed (it is an optional extra: `pip install 'xtune[lm-eval]'`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_export_helpers import tiny_base_and_adapter

from xtune.cli.main import main

pytest.importorskip("lm_eval")
TASK = Path(__file__).resolve().parent / "assets" / "lm_eval" / "xtune_mc.yaml"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_base_and_adapter(tmp_path_factory.mktemp("harness"))


def _lm_eval_itself(tmp_path, monkeypatch, **model_args) -> dict:
    """lm-eval's own run of the task: its HF model loading the folders, the YAML read from a copy whose data
    file lies in the current folder (where lm-eval looks for a relative one)."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    folder = tmp_path / "lm_eval_itself"
    shutil.copytree(TASK.parent, folder)
    monkeypatch.chdir(folder)
    results = lm_eval.simple_evaluate(model="hf", model_args={"dtype": "float32", **model_args},
                                      tasks=["xtune_mc"], task_manager=TaskManager(include_path=str(folder),
                                                                                    include_defaults=False),
                                      batch_size=4, device="cpu", log_samples=False, bootstrap_iters=1000)
    return results["results"]["xtune_mc"]


@pytest.mark.integration
def test_local_task_accuracy_equals_lm_evals_own_for_base_and_adapter(models, tmp_path, monkeypatch, capsys):
    base, adapter = models
    assert main(["eval", str(base), "--tasks", str(TASK), "--compare", str(adapter), "--dtype", "float32",
                 "--batch-size", "4", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert [r["model"] for r in found] == [str(base), f"{base} + {adapter}"]
    own = [_lm_eval_itself(tmp_path / "a", monkeypatch, pretrained=str(base)),
           _lm_eval_itself(tmp_path / "b", monkeypatch, pretrained=str(base), peft=str(adapter))]
    for result, theirs in zip(found, own, strict=True):
        mine = result["tasks"]["xtune_mc"]
        assert mine["samples"] == 10
        assert mine["acc"] == theirs["acc,none"] and mine["acc_norm"] == theirs["acc_norm,none"]
        assert mine["acc_stderr"] == pytest.approx(theirs["acc_stderr,none"])
    assert found[0]["tasks"] != found[1]["tasks"] or own[0] == own[1]  # the adapter was applied


@pytest.mark.integration
def test_table_and_limit(models, capsys):
    base, _ = models
    assert main(["eval", str(base), "--tasks", str(TASK), "--limit", "3", "--num-fewshot", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["model", "task", "metric", "value", "stderr", "samples"]
    assert [line.split()[2] for line in lines[2:]] == ["acc", "acc_norm"]
    assert all(line.split()[-1] == "3" for line in lines[2:])


@pytest.mark.integration
def test_unknown_task_names_the_closest_ones(models, capsys):
    base, _ = models
    assert main(["eval", str(base), "--tasks", "hellaswagg"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("Error: unknown lm-eval task 'hellaswagg'")
    assert "did you mean: hellaswag" in err[0]


def test_task_data_not_available_offline_is_one_error(models, tmp_path, capsys):
    base, _ = models
    hub = tmp_path / "hub_task.yaml"
    hub.write_text(TASK.read_text().replace("dataset_path: json", "dataset_path: xtune-nobody/not-cached")
                   .replace("dataset_kwargs:\n  data_files:\n    test: xtune_mc.jsonl\n", ""))
    missing = tmp_path / "missing_file.yaml"
    missing.write_text(TASK.read_text().replace("test: xtune_mc.jsonl", "test: nowhere.jsonl"))
    for task, expect in ((hub, "not available"), (missing, "nowhere.jsonl"),
                         (tmp_path / "none.yaml", "does not exist")):
        assert main(["eval", str(base), "--tasks", str(task)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("Error: ") and expect in err[0], err


def test_without_lm_eval_installed_the_error_says_how_to_install(models, monkeypatch, capsys):
    import sys

    base, _ = models
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    assert main(["eval", str(base), "--tasks", str(TASK)]) == 2
    assert "pip install 'xtune[lm-eval]'" in capsys.readouterr().err
