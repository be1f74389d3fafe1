"""A run that cannot finish says what it kept: Ctrl-C saves a checkpoint like SIGTERM (a second Ctrl-C
stops at once and says what is lost), and a checkpoint that cannot be written (disk full, a file size
limit) is named with its step, leaves no partial folder and keeps the last good one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from test_bad_input import RECIPE, error, opts
from test_engine_fixtures import make_assets

from xtune.cli.main import main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return make_assets(tmp_path_factory.mktemp("assets"))


def _interrupt_at(monkeypatch, step: int, times: int) -> None:
    """Ctrl-C (SIGINT to this process) `times` times right after optimizer step `step`."""
    from xtune.engine import hooks

    original = hooks.LossHistoryHook.after_train_iter

    def after_train_iter(self, runner, *args, **kwargs):
        original(self, runner, *args, **kwargs)
        if self.history and self.history[-1]["step"] == step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(hooks.LossHistoryHook, "after_train_iter", after_train_iter)


def test_ctrl_c_saves_a_checkpoint_and_resume_continues(assets, tmp_path, monkeypatch, capsys):
    _interrupt_at(monkeypatch, step=2, times=1)
    previous = signal.getsignal(signal.SIGINT)
    wd = tmp_path / "wd"
    options = opts(*assets, max_steps=6, save_steps=0)
    args = ["train", RECIPE, "--work-dir", str(wd), "--cfg-options", *options]
    assert main(args) == 130
    line = error(capsys)
    assert "interrupted (Ctrl-C) at step 2; checkpoint iter_2.pth saved" in line and "--resume auto" in line
    assert (wd / "iter_2.pth" / "checkpoint.json").is_file()
    assert signal.getsignal(signal.SIGINT) == previous  # the handler is put back
    monkeypatch.undo()
    assert main([*args[:4], "--resume", "auto", *args[4:]]) == 0
    assert (wd / "iter_6.pth").is_dir()


def test_a_second_ctrl_c_stops_at_once_and_says_what_is_lost(assets, tmp_path, monkeypatch, capsys):
    _interrupt_at(monkeypatch, step=1, times=2)
    wd = tmp_path / "wd"
    assert main(["train", RECIPE, "--work-dir", str(wd), "--cfg-options",
                 *opts(*assets, max_steps=6, save_steps=0)]) == 130
    line = error(capsys)
    assert "second Ctrl-C" in line and "no checkpoint was saved for the steps after the start" in line
    assert not list(wd.glob("iter_*")) and not list(wd.glob(".iter_*"))


def test_a_checkpoint_that_cannot_be_written_keeps_the_last_good_one(assets, tmp_path):
    wd = tmp_path / "wd"
    options = opts(*assets, max_steps=2, save_steps=2)
    args = ["train", RECIPE, "--work-dir", str(wd), "--cfg-options", *options]
    assert main(args) == 0
    before = sorted(p.name for p in (wd / "iter_2.pth").iterdir())
    # a file size limit (ulimit -f, KiB) that the logs fit under and the optimizer state does not
    command = " ".join([sys.executable, "-m", "xtune", *args[:4], "--resume", "auto", "--cfg-options",
                        *opts(*assets, max_steps=4, save_steps=1)])
    done = subprocess.run(["bash", "-c", f"ulimit -f 400; exec {command}"], capture_output=True, text=True,
                          timeout=300)
    lines = [x for x in done.stderr.splitlines() if x.startswith("Error:")]
    assert done.returncode == 1 and len(lines) == 1, done.stderr[-3000:]
    assert f"could not write checkpoint {wd / 'iter_3.pth'} after step 3" in lines[0]
    assert "the last good checkpoint, iter_2.pth, is kept" in lines[0]
    assert not list(wd.glob(".iter_*")) and not (wd / "iter_3.pth").exists()
    assert sorted(p.name for p in (wd / "iter_2.pth").iterdir()) == before
    assert (wd / "last_checkpoint").read_text() == "iter_2.pth"
