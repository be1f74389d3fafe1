"""The Export tab: `xtune convert pth_to_hf`, `merge` and `hf_to_gguf`, run as the commands themselves, so
their output-path protections (an existing OUT is refused without --force, writes are atomic) hold."""

from __future__ import annotations

import shlex
from pathlib import Path

import gradio as gr

from xtune.errors import XtuneError
from xtune.webui import cli_calls
from xtune.webui.context import WebContext, button, labelled
from xtune.webui.runs import read_meta

OUTTYPES = [
    "f16",
    "bf16",
    "f32",
    "q8_0",
    "q4_0",
    "q6_k",
    "q5_k_m",
    "q5_k_s",
    "q4_k_m",
    "q4_k_s",
    "q3_k_m",
    "q2_k",
]


def convert_args(ctx: WebContext, kind: str, fields: dict) -> list[str]:
    """The `xtune convert KIND ...` arguments for the form, every path confined under the root."""
    p = ctx.paths
    force = ["--force"] if fields.get("force") else []
    if kind == "pth_to_hf":
        options = fields.get("options") or ""
        return (
            [
                "convert",
                "pth_to_hf",
                str(p.local(fields["recipe"], "recipe")),
                str(p.local(fields["checkpoint"], "checkpoint")),
                str(p.local(fields["out"], "output folder")),
            ]
            + force
            + (["--cfg-options", *shlex.split(options)] if options.strip() else [])
        )
    if kind == "merge":
        return [
            "convert",
            "merge",
            p.model_or_hub(fields["base"], "base model"),
            str(p.local(fields["adapter"], "adapter")),
            str(p.local(fields["out"], "output folder")),
            "--dtype",
            fields.get("dtype") or "auto",
        ] + force
    adapter = (fields.get("adapter") or "").strip()
    return (
        [
            "convert",
            "hf_to_gguf",
            p.model_or_hub(fields["model"], "model"),
            str(p.local(fields["out"], "output file")),
            "--outtype",
            fields.get("outtype") or "f16",
        ]
        + (["--adapter", str(p.local(adapter, "adapter"))] if adapter else [])
        + force
    )


def from_run(ctx: WebContext, run: str) -> dict:
    """The export fields a run fills in: its recipe copy, options, last checkpoint, base and adapter."""
    try:
        work_dir = ctx.paths.local(run, "run")
    except XtuneError:
        return {}
    spec = read_meta(work_dir).get("spec") or {}
    last = work_dir / "last_checkpoint"
    checkpoint = (work_dir / last.read_text().strip()) if last.exists() else ""
    options = spec.get("options") or []
    base = next((o.split("=", 1)[1] for o in options if o.startswith("pretrained_model_name_or_path=")), "")
    recipe = Path(work_dir, "webui", f"{spec['recipe']}.py") if spec else ""
    shown = ctx.paths.shown
    return {
        "recipe": shown(recipe) if recipe else "",
        "options": shlex.join(options),
        "checkpoint": shown(checkpoint) if checkpoint else "",
        "base": shown(base) if base.startswith("/") else base,
        "adapter": shown(work_dir / "hf") if (work_dir / "hf").exists() else "",
    }


def build_export_tab(ctx: WebContext, runs_choices) -> dict:
    ui = {}
    with gr.Row():
        ui["run"] = labelled(
            ctx,
            gr.Dropdown,
            "from_run",
            choices=runs_choices(),
            value=None,
            allow_custom_value=True,
            elem_id="export_run",
            scale=3,
        )
        ui["force"] = labelled(ctx, gr.Checkbox, "force", value=False, elem_id="export_force")
    with labelled(ctx, gr.Accordion, "pth_to_hf", open=False):
        with gr.Row():
            ui["recipe"] = labelled(ctx, gr.Textbox, "export_recipe", elem_id="export_recipe")
            ui["checkpoint"] = labelled(ctx, gr.Textbox, "checkpoint", elem_id="export_checkpoint")
            ui["pth_out"] = labelled(ctx, gr.Textbox, "out", elem_id="pth_out")
        ui["options"] = labelled(ctx, gr.Textbox, "export_options", elem_id="export_options")
        ui["convert"] = button(ctx, "convert", elem_id="export_convert")
    with labelled(ctx, gr.Accordion, "merge_title", open=True):
        with gr.Row():
            ui["base"] = labelled(ctx, gr.Textbox, "base", elem_id="merge_base")
            ui["adapter"] = labelled(ctx, gr.Textbox, "adapter", elem_id="merge_adapter")
            ui["merge_out"] = labelled(ctx, gr.Textbox, "out", elem_id="merge_out")
            ui["dtype"] = labelled(
                ctx,
                gr.Dropdown,
                "dtype",
                choices=["auto", "float32", "bfloat16", "float16"],
                value="auto",
                elem_id="merge_dtype",
            )
        ui["merge"] = button(ctx, "merge", variant="primary", elem_id="export_merge")
    with labelled(ctx, gr.Accordion, "gguf_title", open=False):
        with gr.Row():
            ui["gguf_model"] = labelled(ctx, gr.Textbox, "gguf_model", elem_id="gguf_model")
            ui["gguf_adapter"] = labelled(ctx, gr.Textbox, "adapter", elem_id="gguf_adapter")
            ui["gguf_out"] = labelled(ctx, gr.Textbox, "gguf_out", elem_id="gguf_out")
            ui["outtype"] = labelled(
                ctx, gr.Dropdown, "outtype", choices=OUTTYPES, value="f16", elem_id="outtype"
            )
        ui["gguf"] = button(ctx, "write_gguf", elem_id="export_gguf")
    ui["log"] = labelled(ctx, gr.Textbox, "export_log", lines=8, interactive=False, elem_id="export_log")
    _wire(ctx, ui)
    return ui


def _wire(ctx: WebContext, ui: dict) -> None:
    def fill(run):
        f = from_run(ctx, run) if run else {}
        keys = ("recipe", "options", "checkpoint", "base", "adapter", "base", "adapter")
        return [f.get(k, "") if f else gr.update() for k in keys]  # no run chosen: leave what was typed

    ui["run"].input(
        fill,
        ui["run"],
        [ui[k] for k in ("recipe", "options", "checkpoint", "base", "adapter", "gguf_model", "gguf_adapter")],
    )

    def runner(kind: str, names: list[str]):
        def go(*values):
            try:
                args = convert_args(ctx, kind, dict(zip(names, values, strict=True)))
            except XtuneError as exc:
                yield f"Error: {exc}"
                return
            for shown, code in cli_calls.stream_cli(args, ctx.paths.root):
                yield shown if code is None else shown + f"\n[exit {code}]"

        return go

    forms = {
        "pth_to_hf": {"recipe": "recipe", "checkpoint": "checkpoint", "out": "pth_out", "options": "options"},
        "merge": {"base": "base", "adapter": "adapter", "out": "merge_out", "dtype": "dtype"},
        "hf_to_gguf": {
            "model": "gguf_model",
            "adapter": "gguf_adapter",
            "out": "gguf_out",
            "outtype": "outtype",
        },
    }
    for kind, button_key in (("pth_to_hf", "convert"), ("merge", "merge"), ("hf_to_gguf", "gguf")):
        names = [*forms[kind], "force"]
        inputs = [ui[forms[kind][n]] for n in forms[kind]] + [ui["force"]]
        ui[button_key].click(runner(kind, names), inputs, ui["log"])
