"""How a work dir holds checkpoints: `iter_N.pth` after N optimizer steps, and a `last_checkpoint` pointer.

Training writes this layout (`xtune.engine.checkpoints`), resume and `convert pth_to_hf` read it; both
sides take the names from here.
"""

from __future__ import annotations

import logging
from pathlib import Path

from xtune.errors import UsageError

LAST = "last_checkpoint"
log = logging.getLogger("xtune")


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().parent == folder.resolve()


def checkpoint_name(step: int) -> str:
    return f"iter_{step}.pth"


def step_from_name(path: str | Path) -> int | None:
    """N for `iter_N.pth` (a checkpoint folder, xtune's or DeepSpeed's, or an older file), else None."""
    stem = Path(path).name.split(".")[0]
    if stem.startswith("iter_") and stem[5:].isdigit():
        return int(stem[5:])
    return None


def checkpoints_in(work_dir: str | Path) -> list[Path]:
    """The work dir's `iter_N.pth` checkpoints, oldest step first."""
    found = [p for p in Path(work_dir).glob("iter_*.pth") if step_from_name(p) is not None]
    return sorted(found, key=step_from_name)


def find_resume_checkpoint(resume: str | None, work_dir: str | Path) -> str | None:
    """`--resume auto` -> the newest checkpoint in the work dir (None when the run is new);
    `--resume PATH` -> PATH, which must exist.

    Every `iter_N.pth` is complete (written atomically), so the highest N wins even when a kill landed
    between the rename and the update of `last_checkpoint`. The pointer holds the checkpoint's name
    relative to the work dir; an absolute one (older runs) that points outside this work dir (a copied
    work dir still naming the original's checkpoints) is ignored with a warning, so a run resumes only
    from the work dir it was given.
    """
    if not resume:
        return None
    if resume != "auto":
        if not Path(resume).exists():
            raise UsageError(f"--resume {resume!r}: no such checkpoint")
        return str(resume)
    work_dir = Path(work_dir)
    candidates = checkpoints_in(work_dir)
    pointer = work_dir / LAST
    if pointer.is_file():
        target = Path(pointer.read_text(encoding="utf-8").strip())
        target = target if target.is_absolute() else work_dir / target
        if not _inside(target, work_dir):
            log.warning("%s names %s, outside this work dir (a copy of another run's work dir?); resuming "
                        "from this work dir's own checkpoints", pointer, target)
            target = work_dir / target.name
        if target.exists() and step_from_name(target) is not None:
            candidates.append(target)
        elif not candidates:
            raise UsageError(
                f"--resume auto: {pointer} names {str(target)!r}, which no longer exists, and the "
                             "work dir holds no other checkpoint",
                             hint="pass --resume PATH, or train without --resume to start over")
    return str(max(candidates, key=step_from_name)) if candidates else None
