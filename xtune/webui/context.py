"""What every tab shares: the registry the CLI handed over, the allowed paths, the runs, the labels."""

from __future__ import annotations

from dataclasses import dataclass, field

from xtune.webui.i18n import Labeller
from xtune.webui.paths import Paths
from xtune.webui.runs import RunManager


@dataclass
class WebContext:
    registry: object  # xtune's registry, from the CLI (library code never asks the plugin system itself)
    paths: Paths
    runs: RunManager
    labels: Labeller = field(default_factory=Labeller)


def labelled(ctx: WebContext, component_class, key: str, **kwargs):
    """A component labelled in the page's language and bound for the language switch."""
    return ctx.labels.bind(component_class(label=ctx.labels(key), **kwargs), key)


def button(ctx: WebContext, key: str, **kwargs):
    import gradio as gr

    return ctx.labels.bind(gr.Button(ctx.labels(key), **kwargs), key, "value")


def error_text(exc: Exception) -> str:
    """An exception as the CLI would print it: one `Error:` line."""
    return f"Error: {exc}"
