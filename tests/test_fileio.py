"""Atomic text writes: the target holds the old text or the new, and no temporary file is left behind."""

from __future__ import annotations

import pytest

from xtune.fileio import atomic_write_text


def test_writes_and_replaces(tmp_path):
    target = tmp_path / "last_checkpoint"
    atomic_write_text(target, "iter_10.pth")
    atomic_write_text(target, "iter_20.pth")
    assert target.read_text() == "iter_20.pth"
    assert [p.name for p in tmp_path.iterdir()] == ["last_checkpoint"]
    assert target.stat().st_mode & 0o044  # readable like any other file, not mkstemp's 0600


def test_failed_write_keeps_the_old_text(tmp_path, monkeypatch):
    target = tmp_path / "recipe_copy.py"
    atomic_write_text(target, "lr = 2e-4\n")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr("xtune.fileio.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(target, "lr = 1e-4\n")
    assert target.read_text() == "lr = 2e-4\n"
    assert [p.name for p in tmp_path.iterdir()] == ["recipe_copy.py"]
