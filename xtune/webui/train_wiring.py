"""The Train tab's events: which control calls which action, and what a timer tick refreshes."""

from __future__ import annotations

import gradio as gr
import pandas as pd

from xtune.webui import train_actions as act
from xtune.webui.context import WebContext
from xtune.webui.train_tab import TICK_S, _choices, _pick, _settings, _watch, act_runs


def build_train_tab(ctx: WebContext) -> dict:
    """Lay the tab out and wire it; returns its components by name (the tests and the other tabs use a
    few)."""
    c = _choices(ctx)
    ui = {**_pick(ctx, c), **_settings(ctx, c), **_watch(ctx)}
    form = [ui[k] for k in act.FORM]

    def values(*args) -> dict:
        return dict(zip(act.FORM, args, strict=True))

    def refresh_command(*args):
        return act.command_and_estimate(ctx, values(*args))

    filters = [ui[k] for k in ("model", "f_method", "f_objective", "f_dataset", "search")]

    def refilter(*args):
        *chosen, current = args
        names, found = act.recipe_choices(ctx, *chosen)
        if current in names:  # a late answer must not undo the recipe picked meanwhile
            return gr.update(choices=names), found
        return gr.update(choices=names, value=None), found

    # One at a time, in order: the answer for the latest filters is the one left on the page.
    ordered = dict(concurrency_limit=1, concurrency_id="recipe_filter")
    for f in filters[1:]:
        f.input(refilter, [*filters, ui["recipe"]], [ui["recipe"], ui["found"]], **ordered)
    ui["model"].change(refilter, [*filters, ui["recipe"]], [ui["recipe"], ui["found"]], **ordered)
    outputs = [ui["data_format"]] + [ui[k] for k in act.SETTINGS]

    def on_recipe(recipe, data):
        if not recipe:
            return [gr.update() for _ in outputs]
        v = act.prefill(ctx, recipe, data)
        return [v["data_format"]] + [v[k] for k in act.SETTINGS]

    ui["recipe"].change(on_recipe, [ui["recipe"], ui["data"]], outputs).then(
        refresh_command, form, [ui["command"], ui["estimate"]]
    )

    def on_data(data, current):
        return act.detect_format(ctx, data) or current

    ui["data"].change(on_data, [ui["data"], ui["data_format"]], ui["data_format"]).then(
        refresh_command, form, [ui["command"], ui["estimate"]]
    )
    for key in ["model", "data_format", *act.SETTINGS]:
        ui[key].input(refresh_command, form, [ui["command"], ui["estimate"]], trigger_mode="always_last")
    ui["preview"].click(lambda *a: act.preview(ctx, values(*a)), form, ui["samples"])
    _wire_runs(ctx, ui, form, values)
    return ui


def _wire_runs(ctx: WebContext, ui: dict, form: list, values) -> None:
    """Start / Stop / Resume, the run picker, and the timer that keeps the status, curves and log fresh."""
    seen = gr.State(None)

    def on_start(*args):
        message, run = act.start(ctx, values(*args))
        if not run:
            return message, gr.update()
        return message, gr.update(choices=act_runs(ctx), value=run)

    ui["start"].click(on_start, form, [ui["status"], ui["run"]])
    ui["stop"].click(lambda run: act.stop(ctx, run), ui["run"], ui["status"])
    ui["resume"].click(lambda run: act.resume(ctx, run), ui["run"], ui["status"])

    def tick(run, last):
        info = act.report(ctx, run)
        key = (run, info["state"], len(info["loss"]), len(info["other"]), info["log"][-200:])
        if key == last:
            return [gr.update()] * 5 + [last]
        table = act.runs_table(ctx)
        return (
            info["status"],
            _frame(info["loss"]),
            _frame(info["other"]),
            info["log"],
            gr.update(value=table or None),
            key,
        )

    outs = [ui["status"], ui["loss"], ui["other"], ui["log"], ui["runs"], seen]
    gr.Timer(TICK_S).tick(tick, [ui["run"], seen], outs, queue=False, show_progress="hidden")
    ui["run"].change(tick, [ui["run"], gr.State(None)], outs, queue=False)


def _frame(points: list[dict]):
    """Long-form points for a LinePlot; None (a cleared plot) when there are none: a plot once given an
    empty frame keeps drawing its axes but never again its line (Gradio 6.31)."""
    if not points:
        return None
    return pd.DataFrame(
        {
            "step": pd.Series([p["step"] for p in points], dtype="int64"),
            "value": pd.Series([p["value"] for p in points], dtype="float64"),
            "metric": pd.Series([p["metric"] for p in points], dtype="str"),
        }
    )
