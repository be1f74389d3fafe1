"""What a run has done so far, read from the files `xtune train` writes while it trains.

The loop logs each step's scalars to `WORK_DIR/<start time>/vis_data/scalars.json` (one JSON object a line,
appended as it goes; a resumed run starts a new folder) and prints `step K/N` lines, so the page needs no
channel into the process: it reads what a person would read, every couple of seconds.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from xtune.webui.runs import notes

# Scalars that are bookkeeping, not what the objective optimises; everything else (rewards/*, accuracies,
# kl, ...) is plotted beside the loss.
_NOT_METRICS = {
    "loss",
    "lr",
    "data_time",
    "time",
    "grad_norm",
    "global_tokens",
    "tokens_per_s",
    "tflops",
    "iter",
    "step",
    "epoch",
    "memory",
}
_STEP = re.compile(r"\bstep (\d+)/(\d+)\b")


def scalars(work_dir: str | Path) -> list[dict]:
    """Every logged step of the run (all its starts, a resumed step replacing the first try's), by step."""
    by_step: dict[int, dict] = {}
    for path in sorted(Path(work_dir).glob("*/vis_data/scalars.json")):
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line being written right now
            if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
                by_step[int(row["step"])] = row
    return [by_step[k] for k in sorted(by_step)]


def curves(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(loss points, objective metric points) as long-form records {step, value, metric} for the plots."""
    loss = [
        {"step": r["step"], "value": float(r["loss"]), "metric": "loss"}
        for r in rows
        if isinstance(r.get("loss"), (int, float))
    ]
    other = [
        {"step": r["step"], "value": float(v), "metric": k}
        for r in rows
        for k, v in r.items()
        if k not in _NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool)
    ]
    return loss, other


def log_tail(work_dir: str | Path, lines: int = 40) -> str:
    """The last lines the process printed (its console log), progress bars' carriage returns resolved."""
    path = notes(work_dir) / "console.log"
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return ""
    shown = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(shown[-lines:])


def errors(work_dir: str | Path) -> list[str]:
    """The `Error:` lines of the run's console log (what the CLI prints for a refused or failed run)."""
    return [line for line in log_tail(work_dir, 400).splitlines() if line.startswith("Error:")]


def progress(work_dir: str | Path, rows: list[dict]) -> dict:
    """{step, total, eta_s}: the last logged step, the run's total (from its `step K/N` lines) and the time
    left at the recent pace (None when unknown)."""
    total = None
    for match in _STEP.finditer(log_tail(work_dir, 400)):
        total = int(match.group(2))
    step = int(rows[-1]["step"]) if rows else 0
    times = [float(r["time"]) for r in rows[-10:] if isinstance(r.get("time"), (int, float))]
    eta = None
    if total and times and step < total:
        eta = (total - step) * sum(times) / len(times)
    return {"step": step, "total": total, "eta_s": eta}


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
