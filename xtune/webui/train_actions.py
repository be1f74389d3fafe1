"""What the Train tab's controls do: filter recipes, prefill settings, build the command and its estimate,
preview samples, start / stop / resume runs and report on them. Plain functions of the form's values, so
they are tested without a browser; `train_tab` wires them to the page.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from xtune.errors import UsageError, XtuneError
from xtune.webui import cli_calls, metrics
from xtune.webui.recipes import filter_recipes, form_options, recipe_defaults, recipe_path
from xtune.webui.runs import RunSpec, read_meta

HEAD = ["recipe", "model", "data", "data_format"]
SETTINGS = [
    "method",
    "max_epochs",
    "max_steps",
    "max_length",
    "batch_size",
    "accumulative_counts",
    "lr",
    "log_interval",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "lora_targets",
    "quantization",
    "objective_settings",
    "deepspeed",
    "processes",
    "extra",
    "run_name",
]
FORM = HEAD + SETTINGS
_RUN_NAME = re.compile(r"[A-Za-z0-9][\w.-]{0,127}")


def load_defaults(ctx, recipe: str) -> dict:
    from xtune.recipe import load_recipe

    return recipe_defaults(load_recipe(recipe_path(recipe, ctx.registry)))


def resolve_name(ctx, text: str, default: str, what: str) -> str:
    """A model or data field as --cfg-options gets it: "" for the recipe's own, a confined absolute path, or
    a hub id."""
    text = (text or "").strip()
    if not text or text == default or (what == "model" and text in ctx.registry.models):
        return ""
    return ctx.paths.model_or_hub(text, what)


def build_spec(ctx, values: dict) -> RunSpec:
    """The run the form describes (paths confined under the root), or a UsageError naming the field."""
    name = values.get("recipe") or ""
    path = recipe_path(name, ctx.registry)
    defaults = load_defaults(ctx, name)
    form = dict(values)
    form["model"] = resolve_name(ctx, values.get("model"), defaults["model"], "model")
    form["data"] = resolve_name(ctx, values.get("data"), defaults["data"], "data")
    run_name = (values.get("run_name") or "").strip()
    if not _RUN_NAME.fullmatch(run_name):
        raise UsageError(
            f"run name {run_name!r}: use letters, digits, '.', '-' and '_'", hint=f"e.g. {name}-1"
        )
    processes = int(values.get("processes") or 1)
    if processes < 1:
        raise UsageError(f"processes {processes}: at least 1")
    work_dir = ctx.paths.local(f"work_dirs/{run_name}", "run folder")
    return RunSpec(
        recipe=name,
        recipe_path=str(path),
        work_dir=str(work_dir),
        options=form_options(form, defaults),
        deepspeed=values.get("deepspeed") or "",
        processes=processes,
    )


def recipe_choices(ctx, model, method, objective, dataset, search) -> tuple[list[str], str]:
    names = filter_recipes(
        ctx.registry,
        ctx.paths,
        model=model,
        method=method,
        objective=objective,
        dataset=dataset,
        search=search,
    )
    return names, f"{len(names)} {ctx.labels('recipes_found')}"


def prefill(ctx, recipe: str, data: str) -> dict:
    """The settings for a newly chosen recipe (the data format from the recipe, or detected from a local
    data file already chosen) and a fresh run name."""
    values = load_defaults(ctx, recipe)
    values["deepspeed"], values["processes"], values["extra"] = "", 1, ""
    values["run_name"] = f"{recipe}-{time.strftime('%m%d-%H%M%S')}"
    detected = detect_format(ctx, data)
    if detected:
        values["data_format"] = detected
    return values


def detect_format(ctx, data: str) -> str:
    """The dataset map of a local data file, from its first record (`xtune eval`'s rule); "" if unknown."""
    from xtune.evaluate.testset import guess_dataset_map
    from xtune.fileio import looks_local

    data = (data or "").strip()
    if not data or not (looks_local(data) or (ctx.paths.root / data).exists()):
        return ""
    try:
        return guess_dataset_map(str(ctx.paths.local(data, "data")))
    except (XtuneError, OSError, ValueError):
        return ""


def command_and_estimate(ctx, values: dict) -> tuple[str, str]:
    """The equivalent `xtune train` command and `xtune estimate`'s table for the form (or the Error)."""
    if not values.get("recipe"):
        return "", ""
    try:
        spec = build_spec(ctx, values)
    except XtuneError as exc:
        return f"# Error: {exc}", f"Error: {exc}"
    estimate = cli_calls.estimate_text(
        Path(spec.recipe_path), spec.options, ctx.registry, deepspeed=spec.deepspeed, processes=spec.processes
    )
    return spec.command(), estimate


def preview(ctx, values: dict):
    """`xtune log-dataset` on the form's recipe and data: highlighted pieces for the page."""
    try:
        spec = build_spec(ctx, values)
    except XtuneError as exc:
        return [(f"Error: {exc}", "error")]
    pieces, _ = cli_calls.preview_samples(spec.recipe, spec.options, ctx.paths.root)
    return pieces


def start(ctx, values: dict) -> tuple[str, str]:
    """(message, the run's work dir shown relative to root): the run started, or the Error refusing it."""
    try:
        spec = build_spec(ctx, values)
        work_dir = ctx.runs.start(spec)
    except XtuneError as exc:
        return f"Error: {exc}", ""
    return f"{ctx.labels('state_running')}: {spec.command()}", ctx.paths.shown(work_dir)


def stop(ctx, run: str) -> str:
    try:
        work_dir = ctx.paths.local(run, "run")
    except XtuneError as exc:
        return f"Error: {exc}"
    return "SIGTERM sent" if ctx.runs.stop(work_dir) else f"Error: run {run!r} is not running"


def resume(ctx, run: str) -> str:
    try:
        work_dir = ctx.runs.resume(ctx.paths.local(run, "run"))
    except XtuneError as exc:
        return f"Error: {exc}"
    return f"{ctx.labels('state_running')}: {ctx.paths.shown(work_dir)}"


def report(ctx, run: str) -> dict:
    """What the page shows about a run: state, progress line, curves, log tail, Error lines."""
    if not run:
        return {"state": "none", "status": ctx.labels("state_none"), "loss": [], "other": [], "log": ""}
    try:
        work_dir = ctx.paths.local(run, "run")
    except XtuneError as exc:
        return {"state": "none", "status": f"Error: {exc}", "loss": [], "other": [], "log": ""}
    state = ctx.runs.state(work_dir)
    rows = metrics.scalars(work_dir)
    loss, other = metrics.curves(rows)
    done = metrics.progress(work_dir, rows)
    line = f"**{ctx.labels('state_' + state)}**"
    if done["total"] or done["step"]:
        line += f" · {ctx.labels('step')} {done['step']}/{done['total'] or '?'}"
    if state == "running":
        line += f" · {ctx.labels('eta')} {metrics.format_eta(done['eta_s'])}"
    errors = metrics.errors(work_dir) if state in ("failed", "stopped") else []
    status = "\n\n".join([line, *[f"`{e}`" for e in errors[-3:]]])
    return {
        "state": state,
        "status": status,
        "loss": loss,
        "other": other,
        "log": metrics.log_tail(work_dir),
        "step": done["step"],
        "total": done["total"],
    }


def runs_table(ctx) -> list[list]:
    """One row per run under root: name, state, steps, last loss, recipe."""
    rows = []
    for work_dir in ctx.runs.runs()[:50]:
        data = metrics.scalars(work_dir)
        loss = next((r["loss"] for r in reversed(data) if "loss" in r), None)
        recipe = (read_meta(work_dir).get("spec") or {}).get("recipe", "")
        rows.append(
            [
                ctx.paths.shown(work_dir),
                ctx.labels("state_" + ctx.runs.state(work_dir)),
                data[-1]["step"] if data else 0,
                round(loss, 4) if loss is not None else "",
                recipe,
            ]
        )
    return rows
