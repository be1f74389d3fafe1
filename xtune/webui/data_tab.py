"""The Data tab: `xtune check-custom-dataset` on a file, its kept / bad counts and each bad record's
`Error:` line as a table (the command's own words, so the page and the shell never disagree)."""

from __future__ import annotations

import json

import gradio as gr

from xtune.errors import XtuneError
from xtune.webui import cli_calls
from xtune.webui.context import WebContext, button, labelled


def check(ctx: WebContext, data: str, data_format: str, template: str) -> tuple[str, list[list[str]]]:
    """(summary line, [[where, Error line]] rows) for one data file."""
    from xtune.webui.train_actions import detect_format

    try:
        path = ctx.paths.local(data, "data file")
    except XtuneError as exc:
        return f"Error: {exc}", []
    data_format = (data_format or "").strip() or detect_format(ctx, data)
    if not data_format:
        return f"Error: cannot tell the format of {data!r}: choose one", []
    result = cli_calls.check_data(path, data_format, ctx.paths.root, template=(template or "").strip())
    counts = (
        f"**{ctx.labels('kept')}: {result['kept']}** · **{ctx.labels('bad')}: {result['bad']}** "
        f"({data_format})"
    )
    if result["summary"] is not None:
        summary = {k: v for k, v in result["summary"].items() if not isinstance(v, (list, dict))}
        return counts + "\n\n```\n" + json.dumps(summary, ensure_ascii=False, indent=1) + "\n```", []
    if not result["rows"]:
        return counts + "\n\n```\n" + result.get("output", "") + "\n```", []
    return counts, result["rows"]


def build_data_tab(ctx: WebContext, train_ui: dict) -> dict:
    ui = {}
    with gr.Row():
        ui["file"] = labelled(
            ctx,
            gr.Dropdown,
            "check_file",
            choices=ctx.paths.find_data(),
            value=None,
            allow_custom_value=True,
            elem_id="check_file",
            scale=3,
        )
        ui["format"] = labelled(
            ctx,
            gr.Dropdown,
            "data_format",
            choices=[""] + sorted(m.name for m in ctx.registry.dataset_maps),
            value="",
            allow_custom_value=True,
            elem_id="check_format",
        )
        ui["template"] = labelled(
            ctx,
            gr.Dropdown,
            "check_template",
            choices=[""] + sorted(t.name for t in ctx.registry.chat_templates),
            value="",
            elem_id="check_template",
        )
        ui["check"] = button(ctx, "check", variant="primary", elem_id="check")
    ui["result"] = gr.Markdown(elem_id="check_result")
    headers = [ctx.labels("col_where"), ctx.labels("col_error")]
    ui["table"] = labelled(
        ctx,
        gr.Dataframe,
        "check_result",
        headers=headers,
        interactive=False,
        elem_id="check_table",
        wrap=True,
    )

    def run(data, data_format, template):
        summary, rows = check(ctx, data, data_format, template)
        return summary, gr.update(value=rows or None)

    ui["check"].click(run, [ui["file"], ui["format"], ui["template"]], [ui["result"], ui["table"]])
    return ui
