"""Nothing lost, nothing silently wrong: every awkward input ends in one clear `Error:` line (exit 2)
before heavy work, or in a warning, and no output ever overwrites an input (docs/troubleshooting.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from test_engine_fixtures import make_assets

from xtune.cli.main import main

RECIPE = "llama2_7b_lora_alpaca_e3"


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("assets"))


def opts(model_dir, data, **extra) -> list[str]:
    values = dict(pretrained_model_name_or_path=model_dir, data_path=data, max_length=64, batch_size=2,
                  accumulative_counts=1, max_steps=2, save_steps=2, evaluation_inputs="[]", export_hf=False,
                  log_interval=1, lr=1e-3, seed=3, warmup_ratio=0.0)
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("Error:")]
    assert len(lines) == 1, err[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def trained(assets, tmp_path_factory):
    """One real 2-step LoRA run on the tiny model; several tests read its work dir."""
    wd = tmp_path_factory.mktemp("run") / "wd"
    assert main(["train", RECIPE, "--work-dir", str(wd), "--cfg-options", *opts(*assets)]) == 0
    return wd


# ----------------------------------------------------------------------------- overrides


def test_a_key_given_twice_keeps_its_last_value(assets):
    from xtune.plugins import get_registry
    from xtune.recipe import load_recipe
    from xtune.recipe_files import resolve_recipe

    path = resolve_recipe(RECIPE, get_registry())
    cfg = load_recipe(path, ["lr=1e-4", "lr=2e-4", "max_length=128", "max_length=64"])
    assert cfg.optim_wrapper.optimizer.lr == 2e-4 and cfg.lr == 2e-4
    assert cfg.train_dataset.max_length == 64


def test_an_empty_path_is_an_error_not_the_hub_default(assets, tmp_path, capsys):
    assert main(["train", RECIPE, "--work-dir", str(tmp_path / "wd"), "--cfg-options", "data_path="]) == 2
    assert "data_path=: an empty path" in error(capsys)
    assert not (tmp_path / "wd").exists()


def test_a_typo_in_a_top_level_setting_is_a_warning(tmp_path, caplog):
    from xtune.plugins import get_registry
    from xtune.recipe import load_recipe
    from xtune.recipe_files import resolve_recipe

    copy = tmp_path / "mine.py"
    copy.write_text(resolve_recipe(RECIPE, get_registry()).read_text() + "\nlerning_rate = 1e-5\n")
    load_recipe(copy)
    assert "sets 'lerning_rate', which nothing in it reads (did you mean lr" in caplog.text


# ----------------------------------------------------------------------------- preflight


@pytest.mark.parametrize("setting, expect", [
    ("model.gradient_checkpoint=True", "unknown setting 'model.gradient_checkpoint'"),
    ("method_cfg.r=0", "method_cfg.r=0 must be a positive integer"),
    ("method_cfg.lora_dropout=1.5", "method_cfg.lora_dropout=1.5 must be a number in [0, 1)"),
    ("method_cfg.lora_rank=8", "method_cfg.lora_rank is not a setting of method 'lora' (did you mean"),
])
def test_model_and_method_mistakes_are_caught_before_loading(assets, tmp_path, capsys, setting, expect):
    assert main(["train", RECIPE, "--work-dir", str(tmp_path / "wd"), "--cfg-options", *opts(*assets),
                 setting]) == 2
    assert expect in error(capsys)


def test_a_misspelt_key_in_a_copied_recipes_model_section(assets, tmp_path, capsys):
    from xtune.plugins import get_registry
    from xtune.recipe_files import resolve_recipe

    copy = tmp_path / "mine.py"
    text = resolve_recipe(RECIPE, get_registry()).read_text()
    copy.write_text(text.replace("    gradient_checkpointing=", "    gradient_checkpoint="))
    assert main(
        ["train", str(copy), "--work-dir", str(tmp_path / "wd"), "--cfg-options", *opts(*assets)]) == 2
    assert "model.gradient_checkpoint is not a model setting (did you mean gradient_checkpointing" in error(
        capsys)


@pytest.mark.parametrize("kind", ["file", "empty", "loop"])
def test_model_paths_that_are_not_model_folders(assets, tmp_path, capsys, kind):
    path = tmp_path / "model"
    if kind == "file":
        path.write_text("not a model")
    elif kind == "empty":
        path.mkdir()
    else:
        os.symlink(tmp_path / "loop2", path)
        os.symlink(path, tmp_path / "loop2")
    model_dir, data = assets
    assert main(["train", RECIPE, "--work-dir", str(tmp_path / "wd"), "--cfg-options",
                 *opts(path, data)]) == 2
    expect = {"file": "is a file, not a model folder", "empty": "is empty", "loop": "is a symlink loop"}[kind]
    assert expect in error(capsys)


def test_nproc_per_node_that_is_not_a_number(assets, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NPROC_PER_NODE", "abc")
    assert main(["train", RECIPE, "--work-dir", str(tmp_path / "wd"), "--cfg-options", *opts(*assets)]) == 2
    assert "NPROC_PER_NODE='abc' is not a number of processes" in error(capsys)


def test_a_gzip_file_named_jsonl(assets, tmp_path, capsys):
    import gzip

    data = tmp_path / "data.jsonl"
    data.write_bytes(gzip.compress(b'{"instruction": "hi", "output": "there"}\n'))
    assert main(["check-custom-dataset", "--data", str(data), "--format", "alpaca"]) == 2
    assert "the file is gzip-compressed, not text" in error(capsys)


def test_a_failure_before_training_leaves_no_work_dir(assets, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"instruction": 3, "output": None}]))
    model_dir, _ = assets
    wd = tmp_path / "new_wd"
    assert main(["train", RECIPE, "--work-dir", str(wd), "--cfg-options", *opts(model_dir, bad)]) == 2
    assert "bad.json" in error(capsys)
    assert not wd.exists()


# ----------------------------------------------------------------------------- a real run's work dir


@pytest.mark.integration
def test_checkpoints_know_their_recipe_and_no_empty_config_dump(trained):
    from xtune.checkpoint.store import read_store_state

    ckpt = read_store_state(trained / "iter_2.pth")
    record = ckpt["meta"]["xtune_recipe"]
    assert record["name"] == RECIPE and "lr = 0.001" in record["text"]
    assert record["method"]["lora_alpha"] == 16 and len(ckpt["meta"]["cfg"]) > 100
    assert [p.name for p in trained.glob("*.py")] == [f"{RECIPE}.py"]  # no empty <timestamp>.py


@pytest.mark.integration
def test_pth_to_hf_refuses_settings_that_contradict_the_checkpoint(trained, tmp_path, capsys):
    out = tmp_path / "adapter"
    assert main(["convert", "pth_to_hf", RECIPE, str(trained / "iter_2.pth"), str(out), "--cfg-options",
                 "method_cfg.lora_alpha=128"]) == 2
    assert "method_cfg.lora_alpha=128 contradicts the checkpoint, which was trained with lora_alpha=16" in \
        error(capsys)
    assert not out.exists()
    assert main(["convert", "pth_to_hf", RECIPE, str(trained / "iter_2.pth"), str(out)]) == 0
    assert json.loads((out / "adapter_config.json").read_text())["lora_alpha"] == 16


@pytest.mark.integration
def test_an_output_that_would_destroy_an_input_is_refused_even_with_force(trained, tmp_path, capsys):
    before = sorted(p.name for p in trained.iterdir())
    assert main(["convert", "pth_to_hf", RECIPE, str(trained / "iter_2.pth"), str(trained), "--force"]) == 2
    assert f"output '{trained}' contains the input" in error(capsys)
    assert sorted(p.name for p in trained.iterdir()) == before
    adapter = tmp_path / "adapter2"
    assert main(["convert", "pth_to_hf", RECIPE, str(trained / "iter_2.pth"), str(adapter)]) == 0
    model_dir = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert main(["convert", "merge", model_dir, str(adapter), str(adapter), "--force"]) == 2
    assert f"output '{adapter}' is the input" in error(capsys)
    assert (adapter / "adapter_model.safetensors").is_file()


@pytest.mark.integration
def test_outputs_in_a_read_only_folder_in_a_file_or_the_current_folder(trained, tmp_path, capsys,
                                                                        monkeypatch):
    ckpt = str(trained / "iter_2.pth")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["convert", "pth_to_hf", RECIPE, ckpt, str(blocker / "out")]) == 2
    assert "is a file, not a folder" in error(capsys)
    monkeypatch.chdir(tmp_path)
    assert main(["convert", "pth_to_hf", RECIPE, ckpt, ".", "--force"]) == 2
    assert "is the current folder" in error(capsys)
    readonly = tmp_path / "ro"
    readonly.mkdir()
    readonly.chmod(0o500)
    try:
        if os.access(readonly, os.W_OK):
            pytest.skip("running as a user that can write anywhere (root): the read-only case cannot be made")
        assert main(["convert", "pth_to_hf", RECIPE, ckpt, str(readonly / "out")]) == 2
        assert "is not writable" in error(capsys)
    finally:
        readonly.chmod(0o700)


@pytest.mark.integration
def test_a_second_run_into_the_same_work_dir_needs_resume_or_overwrite(assets, trained, capsys):
    assert main(["train", RECIPE, "--work-dir", str(trained), "--cfg-options", *opts(*assets)]) == 2
    assert "holds another run" in error(capsys) and (trained / "iter_2.pth" / "checkpoint.json").is_file()


@pytest.mark.integration
def test_overwrite_clears_the_previous_run(assets, tmp_path, capsys):
    wd = tmp_path / "wd"
    assert main(["train", RECIPE, "--work-dir", str(wd), "--cfg-options", *opts(*assets, max_steps=4)]) == 0
    assert (wd / "iter_4.pth" / "checkpoint.json").is_file()
    console = capsys.readouterr()
    shown = console.out + console.err  # xtune's lines and the progress, not the libraries' tables
    assert "precision " in shown and "saved checkpoint" in shown
    assert "Hooks will be executed" not in shown and "System environment" not in shown
    assert "is_gradient_checkpointing" not in shown and "FutureWarning" not in shown
    assert "Hooks will be executed" in next(wd.glob("20*/20*.log")).read_text()  # the log file keeps them
    assert main(["train", RECIPE, "--work-dir", str(wd), "--overwrite", "--cfg-options", *opts(*assets)]) == 0
    assert sorted(p.name for p in wd.glob("iter_*.pth")) == ["iter_2.pth"]
    assert len(list(wd.glob("20*"))) == 1  # the earlier run's log folder went too


@pytest.mark.integration
def test_a_live_run_holds_the_work_dir(assets, trained, tmp_path, capsys):
    wd = tmp_path / "busy"
    wd.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(wd / '.xtune.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, f'{os.getpid()} host now'.encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", RECIPE, "--work-dir", str(wd), "--cfg-options", *opts(*assets)]) == 2
        assert f"is in use by another xtune train (pid {holder.pid})" in error(capsys)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.integration
def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path, caplog):
    from xtune.engine.workdir import LOCK, locked

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK).write_text(f"{dead.pid} somehost {time.time()}\n")
    with locked(tmp_path):
        assert (tmp_path / LOCK).read_text().split()[0] == str(os.getpid())
    assert f"taking over the lock of pid {dead.pid}" in caplog.text


@pytest.mark.integration
def test_resume_from_a_truncated_or_foreign_checkpoint(assets, trained, tmp_path, capsys):
    import shutil

    truncated = tmp_path / "iter_2.pth"
    shutil.copytree(trained / "iter_2.pth", truncated)
    tensors = truncated / "state.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:2000])
    args = ["train", RECIPE, "--work-dir", str(tmp_path / "wd"), "--cfg-options", *opts(*assets, max_steps=4)]
    assert main([*args[:4], "--resume", str(truncated), *args[4:]]) == 2
    assert "state.safetensors is truncated or unreadable" in error(capsys)
    old = tmp_path / "old" / "iter_2.pth"  # the older pickled format, cut short
    old.parent.mkdir()
    old.write_bytes(b"PK\x03\x04" + bytes(2000))
    assert main([*args[:4], "--resume", str(old), *args[4:]]) == 2
    assert "is corrupt or not a PyTorch checkpoint" in error(capsys)
    assert main([*args[:4], "--resume", str(trained / "iter_2.pth"), *args[4:], "method_cfg.r=8"]) == 2
    assert "does not fit this run's model: shape mismatch" in error(capsys)


def test_resume_auto_whose_pointer_names_a_deleted_checkpoint(assets, tmp_path, capsys):
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "last_checkpoint").write_text(str(wd / "iter_9.pth"))
    assert main(
        ["train", RECIPE, "--work-dir", str(wd), "--resume", "auto", "--cfg-options", *opts(*assets)]) == 2
    assert "which no longer exists" in error(capsys)


def test_a_huge_record_is_clipped_before_tokenizing():
    from xtune.data.tokenize import MAX_CHARS_PER_TOKEN, clip_segments

    segments = [{"text": "system ", "train": False}, {"text": "x " * 5_000_000, "train": True},
                {"text": "tail", "train": True}]
    clipped = clip_segments(segments, max_length=128)
    assert sum(len(s["text"]) for s in clipped) == 129 * MAX_CHARS_PER_TOKEN
    assert clipped[0] == segments[0] and len(clipped) == 2
