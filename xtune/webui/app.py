"""The page: four tabs (Train, Data, Chat, Export) and the language switch, built as one Gradio Blocks."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from xtune.webui.context import WebContext, labelled
from xtune.webui.i18n import LANGS, Labeller
from xtune.webui.paths import Paths
from xtune.webui.runs import RunManager

CSS = "#estimate, #command, #log_tail textarea {font-family: monospace} footer {display: none !important}"


def build_app(registry, root: str | Path, lang: str = "en") -> tuple[gr.Blocks, WebContext]:
    """(the Blocks to launch, the context holding its runs); nothing is loaded or started yet."""
    from xtune.webui.chat_tab import build_chat_tab
    from xtune.webui.data_tab import build_data_tab
    from xtune.webui.export_tab import build_export_tab
    from xtune.webui.train_tab import act_runs
    from xtune.webui.train_wiring import build_train_tab

    paths = Paths(root)
    ctx = WebContext(registry=registry, paths=paths, runs=RunManager(paths.root), labels=Labeller(lang))
    L = ctx.labels
    with gr.Blocks(title="xtune webui", analytics_enabled=False) as app:
        with gr.Row():
            title = L.bind(gr.Markdown(f"## {L('title')}", elem_id="title"), "title", "value")
            choice = labelled(
                ctx,
                gr.Radio,
                "lang",
                choices=[("English", "en"), ("中文", "zh")],
                value=L.lang,
                elem_id="lang",
            )
        with gr.Tabs():
            with labelled(ctx, gr.Tab, "tab_train", id="train", elem_id="tab_train"):
                train = build_train_tab(ctx)
            with labelled(ctx, gr.Tab, "tab_data", id="data", elem_id="tab_data") as data_tab:
                data = build_data_tab(ctx, train)
            with labelled(ctx, gr.Tab, "tab_chat", id="chat", elem_id="tab_chat") as chat_tab:
                chat = build_chat_tab(ctx)
            with labelled(ctx, gr.Tab, "tab_export", id="export", elem_id="tab_export") as export_tab:
                export = build_export_tab(ctx, lambda: act_runs(ctx))
        _refresh_pickers(
            ctx,
            {
                data_tab: [data["file"]],
                chat_tab: [chat["model"], chat["adapter"]],
                export_tab: [export["run"]],
            },
        )
        title_index = L.components().index(title)

        def switch(lang):
            L.lang = lang if lang in LANGS else "en"
            updates = L.updates(L.lang)
            updates[title_index] = {"__type__": "update", "value": f"## {L('title')}"}
            return updates

        choice.change(switch, choice, L.components(), queue=False)
    return app, ctx


def _refresh_pickers(ctx: WebContext, tabs: dict) -> None:
    """A tab's pickers list again what lies under the root when the tab is opened (a run finished since
    the page was loaded has new adapters and checkpoints)."""
    from xtune.webui.train_tab import act_runs

    paths = ctx.paths
    lists = {
        "check_file": paths.find_data,
        "chat_model": paths.find_models,
        "chat_adapter": lambda: [""] + paths.find_adapters(),
        "export_run": lambda: act_runs(ctx),
    }
    for tab, pickers in tabs.items():
        makers = [lists[p.elem_id] for p in pickers]
        tab.select(lambda makers=makers: [gr.update(choices=m()) for m in makers], None, pickers, queue=False)


def launch_kwargs(host: str, port: int, auth: tuple[str, str] | None) -> dict:
    """Gradio's launch settings: the address given, no share link ever, no files served beyond its own."""
    return dict(
        server_name=host,
        server_port=port,
        auth=auth,
        share=False,
        inbrowser=False,
        quiet=True,
        show_error=True,
        allowed_paths=[],
        prevent_thread_lock=True,
        css=CSS,
    )
