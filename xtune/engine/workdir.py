"""The work dir of one run: held by a lock while training, never silently mixed with another run.

- A lock (`.xtune.lock`, an flock on the file plus the holder's pid) keeps a second `xtune train` out of a
  work dir that a live run uses; the second is refused with the pid. A lock left by a dead process is
  taken over with a warning.
- A work dir that holds another run's outputs (checkpoints, `hf/`, the loss history) is not trained into
  without `--resume` (continue it) or `--overwrite` (clear that run's outputs first).
- A run that fails before it has trained anything leaves no work dir behind if it created it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from xtune.checkpoint.layout import LAST, checkpoints_in
from xtune.errors import UsageError

log = logging.getLogger("xtune")

LOCK = ".xtune.lock"
# What a finished or interrupted run leaves in its work dir (besides mmengine's timestamped log folders).
RUN_OUTPUTS = ("hf", LAST, "loss_history.json", "training_loss.png")


def previous_run(work_dir: Path) -> list[str]:
    """The outputs of an earlier run in `work_dir` (empty: nothing to protect)."""
    found = [p.name for p in checkpoints_in(work_dir)]
    found += [name for name in RUN_OUTPUTS if (work_dir / name).exists()]
    return found


def _log_folders(work_dir: Path) -> list[Path]:
    """mmengine's per-run folders, named by start time (20261201_171500)."""
    return [p for p in work_dir.iterdir() if p.is_dir() and p.name.replace("_", "").isdigit()]


def clear_previous_run(work_dir: Path) -> None:
    """`--overwrite`: remove what an earlier run wrote (checkpoints, hf/, history, logs, recipe copies)."""
    for path in [*checkpoints_in(work_dir), *_log_folders(work_dir), *work_dir.glob("*.py"),
                 *(work_dir / name for name in RUN_OUTPUTS)]:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def check_previous_run(work_dir: Path, *, resume: str | None, overwrite: bool) -> None:
    """Refuse to train into another run's outputs unless resuming it or asked to overwrite it."""
    if resume or not work_dir.is_dir():
        return
    found = previous_run(work_dir)
    if not found:
        return
    if overwrite:
        log.warning("--overwrite: removing the previous run in %s (%s)", work_dir, ", ".join(found[:6]))
        clear_previous_run(work_dir)
        return
    raise UsageError(f"work dir {str(work_dir)!r} holds another run ({', '.join(found[:4])}"
                     f"{', ...' if len(found) > 4 else ''})",
                     hint="continue it with --resume auto, pick a new --work-dir, or pass --overwrite to "
                          "clear it")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def locked(work_dir: Path) -> Iterator[None]:
    """Hold the work dir's lock for the block (only rank 0 of a distributed run takes it)."""
    if int(os.environ.get("RANK", "0") or 0) != 0:
        yield
        return
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / LOCK
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
            who = f"pid {holder[0]}" if holder else "another process"
            raise UsageError(f"work dir {str(work_dir)!r} is in use by another xtune train ({who})",
                             hint="wait for it to finish, or train into another --work-dir") from None
        stale = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
        if stale and stale[0].isdigit() and int(stale[0]) != os.getpid() and not _alive(int(stale[0])):
            log.warning("work dir %s: taking over the lock of pid %s, which is no longer running", work_dir,
                        stale[0])
        os.ftruncate(fd, 0)
        holder = f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n"
        os.pwrite(fd, holder.encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing releases the flock


class RunState:
    started = False  # set when the training loop begins: from then on the work dir holds evidence


@contextlib.contextmanager
def removed_if_untrained(work_dir: Path) -> Iterator[RunState]:
    """If this run creates `work_dir` and fails before its training loop starts, remove the folder again
    (a typo must not leave empty work dirs behind)."""
    existed = work_dir.exists()
    state = RunState()
    try:
        yield state
    except BaseException:
        if not existed and not state.started and work_dir.is_dir() and not checkpoints_in(work_dir):
            shutil.rmtree(work_dir, ignore_errors=True)
        raise
