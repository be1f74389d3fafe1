"""The Train tab's layout and wiring: pick, check, estimate, start, watch (the actions are in
`train_actions`)."""

from __future__ import annotations

import gradio as gr

from xtune.webui import train_actions as act
from xtune.webui.context import WebContext, button, labelled
from xtune.webui.recipes import QUANT

TICK_S = 2.0  # how often a running run's files are read again


def _choices(ctx: WebContext) -> dict[str, list[str]]:
    reg = ctx.registry
    recipes = list(reg.recipes)
    models = ctx.paths.find_models() + sorted({r.model for r in recipes if r.model})
    return {
        "model": models,
        "method": [""] + sorted({r.method for r in recipes}),
        "objective": [""] + sorted({r.objective or "sft" for r in recipes}),
        "dataset": [""] + sorted({r.dataset for r in recipes}),
        "data": [""] + ctx.paths.find_data(),
        "format": sorted(m.name for m in reg.dataset_maps),
        "tuning": sorted(m.name for m in reg.tuning_methods),
        "deepspeed": [""] + sorted(p.name for p in reg.deepspeed_presets),
    }


def _pick(ctx: WebContext, c: dict) -> dict:
    """Model, filters, recipe and data: the first rows of the tab."""
    f = {}
    with gr.Row():
        f["model"] = labelled(
            ctx,
            gr.Dropdown,
            "model",
            choices=c["model"],
            value=None,
            allow_custom_value=True,
            elem_id="model",
            scale=3,
        )
        f["f_method"] = labelled(
            ctx, gr.Dropdown, "filter_method", choices=c["method"], value="", elem_id="filter_method"
        )
        f["f_objective"] = labelled(
            ctx, gr.Dropdown, "filter_objective", choices=c["objective"], value="", elem_id="filter_objective"
        )
        f["f_dataset"] = labelled(
            ctx, gr.Dropdown, "filter_dataset", choices=c["dataset"], value="", elem_id="filter_dataset"
        )
    with gr.Row():
        f["search"] = labelled(ctx, gr.Textbox, "search", elem_id="search", scale=1)
        names, found = act.recipe_choices(ctx, "", "", "", "", "")
        f["recipe"] = labelled(
            ctx, gr.Dropdown, "recipe", choices=names, value=None, elem_id="recipe", scale=3
        )
        f["found"] = gr.Markdown(found, elem_id="recipes_found")
    with gr.Row():
        f["data"] = labelled(
            ctx,
            gr.Dropdown,
            "data",
            choices=c["data"],
            value="",
            allow_custom_value=True,
            elem_id="data",
            scale=3,
        )
        f["data_format"] = labelled(
            ctx,
            gr.Dropdown,
            "data_format",
            choices=c["format"],
            value=None,
            allow_custom_value=True,
            elem_id="data_format",
        )
        f["preview"] = button(ctx, "preview", elem_id="preview")
    colors = {"trained": "green", "error": "red"}  # the spans log-dataset marks [[...]]
    f["samples"] = labelled(ctx, gr.HighlightedText, "samples", elem_id="samples", color_map=colors)
    return f


def _settings(ctx: WebContext, c: dict) -> dict:
    s = {}
    with labelled(ctx, gr.Accordion, "settings", open=True):
        with gr.Row():
            s["method"] = labelled(ctx, gr.Dropdown, "method", choices=c["tuning"], elem_id="method")
            for key in ("max_epochs", "max_steps", "max_length", "batch_size", "accumulative_counts"):
                s[key] = labelled(ctx, gr.Number, key, precision=0, elem_id=key, minimum=0)
            s["lr"] = labelled(ctx, gr.Number, "lr", elem_id="lr")
            s["log_interval"] = labelled(ctx, gr.Number, "log_interval", precision=0, elem_id="log_interval")
        with gr.Row():
            s["lora_r"] = labelled(ctx, gr.Number, "lora_r", precision=0, elem_id="lora_r")
            s["lora_alpha"] = labelled(ctx, gr.Number, "lora_alpha", elem_id="lora_alpha")
            s["lora_dropout"] = labelled(ctx, gr.Number, "lora_dropout", elem_id="lora_dropout")
            s["lora_targets"] = labelled(ctx, gr.Textbox, "lora_targets", elem_id="lora_targets")
            s["quantization"] = labelled(
                ctx, gr.Dropdown, "quantization", choices=list(QUANT), value="none", elem_id="quantization"
            )
            s["deepspeed"] = labelled(
                ctx,
                gr.Dropdown,
                "deepspeed",
                choices=c["deepspeed"],
                value="",
                allow_custom_value=True,
                elem_id="deepspeed",
            )
            s["processes"] = labelled(
                ctx, gr.Number, "processes", precision=0, value=1, minimum=1, elem_id="processes"
            )
        with gr.Row():
            s["objective_settings"] = labelled(
                ctx, gr.Textbox, "objective_settings", elem_id="objective_settings"
            )
            s["extra"] = labelled(ctx, gr.Textbox, "extra", elem_id="extra")
            s["run_name"] = labelled(ctx, gr.Textbox, "run_name", elem_id="run_name")
    return s


def _watch(ctx: WebContext) -> dict:
    w = {}
    with gr.Row():
        w["estimate"] = labelled(
            ctx, gr.Code, "estimate", language=None, interactive=False, elem_id="estimate"
        )
        w["command"] = labelled(
            ctx, gr.Code, "command", language="shell", interactive=False, elem_id="command"
        )
    with gr.Row():
        w["start"] = button(ctx, "start", variant="primary", elem_id="start")
        w["stop"] = button(ctx, "stop", variant="stop", elem_id="stop")
        w["resume"] = button(ctx, "resume", elem_id="resume")
        w["run"] = labelled(
            ctx,
            gr.Dropdown,
            "run",
            choices=act_runs(ctx),
            value=None,
            allow_custom_value=True,
            elem_id="run",
            scale=2,
        )
    w["status"] = gr.Markdown(ctx.labels("state_none"), elem_id="run_status")
    with gr.Row():
        w["loss"] = labelled(
            ctx,
            gr.LinePlot,
            "loss_plot",
            x="step",
            y="value",
            color="metric",
            elem_id="loss_plot",
            height=260,
        )
        w["other"] = labelled(
            ctx,
            gr.LinePlot,
            "metrics_plot",
            x="step",
            y="value",
            color="metric",
            elem_id="metrics_plot",
            height=260,
        )
    w["log"] = labelled(
        ctx, gr.Textbox, "log", lines=10, max_lines=10, interactive=False, elem_id="log_tail", autoscroll=True
    )
    headers = [ctx.labels(k) for k in ("col_run", "col_state", "col_step", "col_loss", "col_recipe")]
    w["runs"] = labelled(
        ctx,
        gr.Dataframe,
        "runs",
        headers=headers,
        value=act.runs_table(ctx) or None,
        interactive=False,
        elem_id="runs_table",
    )
    return w


def act_runs(ctx: WebContext) -> list[str]:
    return [ctx.paths.shown(p) for p in ctx.runs.runs()]
