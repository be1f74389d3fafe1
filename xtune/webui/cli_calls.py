"""The page's data checks, sample previews, exports and memory estimates: the CLI's own code paths.

`check-custom-dataset`, `log-dataset` and `convert` run as the commands themselves (a subprocess in the
root), so their checks, output-path protections and `Error:` lines are the CLI's, shown as printed. The
estimate is computed in the page's process (it is called on every keystroke) from the same library calls
`xtune estimate` makes.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from xtune.errors import XtuneError

_MARKS = re.compile(r"\[\[(.*?)\]\]", re.S)


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def errors(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("Error:")]


def run_cli(args: list[str], cwd: Path, timeout: float = 600) -> CliResult:
    """`xtune ARGS` in a subprocess: its exit code and what it printed."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "xtune", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return CliResult(1, "", f"Error: xtune {args[0]} took more than {timeout:.0f} s and was stopped")
    return CliResult(done.returncode, done.stdout, done.stderr)


def check_data(path: Path, data_format: str, cwd: Path, template: str = "") -> dict:
    """`xtune check-custom-dataset --data PATH --format F`: {kept, bad, rows: [[where, Error line]], summary}.
    Kept = records read minus bad ones (the command itself stops at the first bad record's report)."""
    args = ["check-custom-dataset", "--data", str(path), "--format", data_format, "--json"]
    result = run_cli(args + (["--template", template] if template else []), cwd)
    if result.code == 0:
        summary = json.loads(result.stdout)
        return {"kept": summary.get("records", 0), "bad": 0, "rows": [], "summary": summary}
    rows = [[line[len("Error: ") :].split(": ", 1)[0], line] for line in result.errors]
    return {
        "kept": max(0, _record_count(path) - len(rows)),
        "bad": len(rows),
        "rows": rows,
        "summary": None,
        "output": result.stderr.strip(),
    }


def _record_count(path: Path) -> int:
    from xtune.data.sources import load_source

    try:
        return len(load_source(str(path)))
    except (XtuneError, OSError, ValueError):
        return 0


def preview_samples(recipe: str, options: list[str], cwd: Path, num: int = 3) -> tuple[list, str]:
    """`xtune log-dataset RECIPE -n NUM`: (highlighted pieces [(text, "trained"|None)], the printed text).
    The `[[...]]` marks of the command become highlighted spans; on failure the pieces are the Error."""
    args = ["log-dataset", recipe, "-n", str(num)] + (["--cfg-options", *options] if options else [])
    result = run_cli(args, cwd)
    if result.code != 0:
        text = "\n".join(result.errors) or result.stderr.strip()[-2000:]
        return [(text, "error")], text
    return highlight(result.stdout), result.stdout


def highlight(text: str) -> list[tuple[str, str | None]]:
    """log-dataset's text with `[[trained]]` spans as (span, "trained") pieces, the rest as (text, None)."""
    pieces, last = [], 0
    for match in _MARKS.finditer(text):
        if match.start() > last:
            pieces.append((text[last : match.start()], None))
        pieces.append((match.group(1), "trained"))
        last = match.end()
    if last < len(text):
        pieces.append((text[last:], None))
    return pieces


def estimate_text(
    recipe_path: Path,
    options: list[str],
    registry,
    *,
    deepspeed: str = "",
    processes: int = 1,
    device: str | None = None,
) -> str:
    """`xtune estimate`'s table for the page's settings, or the `Error:` line it would print."""
    from xtune.engine.objective_setup import run_problems
    from xtune.estimate import estimate_recipe_cfg
    from xtune.estimate.report import table
    from xtune.plan import resolve_plan
    from xtune.recipe import load_recipe

    try:
        cfg = load_recipe(recipe_path, options)
        plan = resolve_plan(cfg, registry, recipe=recipe_path.stem, deepspeed=deepspeed or None)
        problems = run_problems(cfg, registry, deepspeed=deepspeed or None, processes=processes)
        if problems:
            return "Error: " + "; ".join(problems)
        est = estimate_recipe_cfg(
            cfg, registry, plan, device=device or default_device(), num_devices=max(1, processes)
        )
    except XtuneError as exc:
        return f"Error: {exc}"
    return table(est, recipe_path.stem)


def warm_up() -> None:
    """Import what the estimate and chat need, in the background while the page is first opened: the first
    estimate would otherwise wait for torch and the engine to import (tens of seconds on a busy machine)."""
    import importlib

    for module in (
        "torch",
        "xtune.recipe",
        "xtune.plan",
        "xtune.estimate",
        "xtune.engine.objective_setup",
        "xtune.chat.session",
        "xtune.models.build",
    ):
        importlib.import_module(module)


def default_device() -> str:
    """Where a run started here would train: this machine's GPU when it has one, else its CPU."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def stream_cli(args: list[str], cwd: Path):
    """Run `xtune ARGS`, yielding everything printed so far as it comes (exports take a while)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "xtune", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    shown = f"$ xtune {' '.join(args)}\n"
    yield shown, None
    assert proc.stdout is not None
    for line in proc.stdout:
        shown += line
        yield shown, None
    yield shown, proc.wait()
