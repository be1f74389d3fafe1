"""Training runs started from the page: each one is an `xtune train` process, never training in the server.

Why a process: every check, lock, `Error:` line and the SIGTERM checkpoint of `xtune train` apply unchanged,
a crash cannot take the page down, and the run outlives a closed browser tab. Each run's work dir is
`ROOT/work_dirs/NAME`; the page keeps its own notes in `WORK_DIR/webui/`: the recipe copy the process trains
(`<recipe>.py`), `run.json` (the command's parts, start time, exit code) and `console.log` (what the process
printed). An earlier run's state is read back from those files and the work dir's lock.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from xtune.errors import UsageError
from xtune.fileio import atomic_path

NOTES = "webui"  # the page's folder inside a work dir
STOP_CODES = (143, 130, -signal.SIGTERM, -signal.SIGINT)  # SIGTERM / Ctrl-C: a checkpoint was saved


@dataclass
class RunSpec:
    """One training run as the page describes it: exactly the parts of its `xtune train` command line."""

    recipe: str  # the registered name, as the equivalent command shows it
    recipe_path: str  # the recipe file it was copied from
    work_dir: str
    options: list[str] = field(default_factory=list)  # --cfg-options KEY=VALUE
    deepspeed: str = ""
    processes: int = 1

    def argv(self, recipe: str | None = None, resume: bool = False) -> list[str]:
        """`xtune train` arguments; `recipe` replaces the name (the process trains the written copy)."""
        args = ["train", recipe or self.recipe, "--work-dir", self.work_dir]
        if self.deepspeed:
            args += ["--deepspeed", self.deepspeed]
        if resume:
            args += ["--resume", "auto"]
        if self.options:
            args += ["--cfg-options", *self.options]
        return args

    def command(self, resume: bool = False) -> str:
        """The equivalent shell command, copyable from the page."""
        env = f"NPROC_PER_NODE={self.processes} " if self.processes > 1 else ""
        return env + "xtune " + shlex.join(self.argv(resume=resume))


def notes(work_dir: str | Path) -> Path:
    return Path(work_dir) / NOTES


def write_meta(work_dir: Path, meta: dict) -> None:
    with atomic_path(notes(work_dir) / "run.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")


def read_meta(work_dir: str | Path) -> dict:
    path = notes(work_dir) / "run.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


class RunManager:
    """The processes this page started (so it can stop them and reap them), and the runs under root."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, spec: RunSpec, resume: bool = False) -> Path:
        """Write the recipe copy and notes, then start `xtune train` on the copy; the process's output goes
        to console.log. Refuses a work dir whose run is still going."""
        work_dir = Path(spec.work_dir)
        if self.state(work_dir) == "running":
            raise UsageError(
                f"run {work_dir.name!r} is still running", hint="stop it first, or pick a new name"
            )
        folder = notes(work_dir)
        folder.mkdir(parents=True, exist_ok=True)
        copy = folder / f"{spec.recipe}.py"
        if not resume or not copy.exists():
            shutil.copyfile(spec.recipe_path, copy)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        if spec.processes > 1:
            env["NPROC_PER_NODE"] = str(spec.processes)
        with open(folder / "console.log", "a" if resume else "w", encoding="utf-8") as log:
            log.write(f"$ {spec.command(resume)}\n")
            log.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", "xtune", *spec.argv(str(copy), resume)],
                cwd=self.root,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.procs[str(work_dir)] = proc
        write_meta(
            work_dir,
            {
                "spec": asdict(spec),
                "pid": proc.pid,
                "started": time.time(),
                "resumed": resume,
                "exit_code": None,
            },
        )
        return work_dir

    def resume(self, work_dir: Path) -> Path:
        meta = read_meta(work_dir)
        if not meta.get("spec"):
            raise UsageError(
                f"{work_dir.name!r} was not started from this page: it has no webui/run.json",
                hint=f"resume it from a shell: xtune train RECIPE --work-dir {work_dir} --resume auto",
            )
        if not (Path(work_dir) / "last_checkpoint").exists():
            raise UsageError(
                f"run {Path(work_dir).name!r} has no checkpoint to resume from", hint="start it again instead"
            )
        return self.start(RunSpec(**meta["spec"]), resume=True)

    def stop(self, work_dir: Path) -> bool:
        """SIGTERM the run: `xtune train` finishes the step under way, saves a checkpoint and exits 143."""
        pid = self._pid(work_dir)
        if pid is None:
            return False
        os.kill(pid, signal.SIGTERM)
        return True

    def stop_all(self) -> None:
        """When the page shuts down, its runs save a checkpoint and stop (resumable later)."""
        for work_dir in list(self.procs):
            if self.state(Path(work_dir)) == "running":
                self.stop(Path(work_dir))

    def _pid(self, work_dir: Path) -> int | None:
        proc = self.procs.get(str(work_dir))
        if proc is not None and proc.poll() is None:
            return proc.pid
        holder = lock_holder(work_dir)
        meta_pid = read_meta(work_dir).get("pid")
        return holder if holder is not None else (meta_pid if meta_pid and _alive(meta_pid) else None)

    def state(self, work_dir: Path) -> str:
        """running, finished, stopped, failed, or saved (a checkpoint, not started here)."""
        work_dir = Path(work_dir)
        proc = self.procs.get(str(work_dir))
        meta = read_meta(work_dir)
        if proc is not None:
            code = proc.poll()
            if code is None:
                return "running"
            if meta.get("exit_code") is None and meta:
                write_meta(work_dir, {**meta, "exit_code": code, "ended": time.time()})
                meta["exit_code"] = code
        elif lock_holder(work_dir) is not None or (
            meta.get("exit_code") is None and meta.get("pid") and _alive(meta["pid"])
        ):
            return "running"
        code = meta.get("exit_code")
        if code is not None:
            return "finished" if code == 0 else "stopped" if code in STOP_CODES else "failed"
        if (work_dir / "hf").is_dir():
            return "finished"
        return "saved" if (work_dir / "last_checkpoint").exists() else "failed"

    def runs(self) -> list[Path]:
        """Work dirs under root (newest first): `work_dirs/*`, and any folder holding a run's outputs."""
        found = set()
        for pattern in ("work_dirs/*", "*", "*/*"):
            for path in self.root.glob(pattern):
                if path.is_dir() and (
                    (path / NOTES / "run.json").exists()
                    or (path / "last_checkpoint").exists()
                    or (path / "loss_history.json").exists()
                ):
                    found.add(path.resolve())
        return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def lock_holder(work_dir: Path) -> int | None:
    """The pid in the work dir's `.xtune.lock` while a live `xtune train` holds it (emptied at the end)."""
    try:
        text = (Path(work_dir) / ".xtune.lock").read_text(encoding="utf-8").split()
    except OSError:
        return None
    pid = int(text[0]) if text and text[0].isdigit() else None
    return pid if pid is not None and _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True
    # a zombie (ended, not reaped by a page that restarted) counts as gone
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[-1][:1] != "Z"
    except OSError:
        return True
