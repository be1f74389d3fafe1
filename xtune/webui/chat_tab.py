"""The Chat tab: a model, a model + adapter or a merged model, streamed; base and tuned side by side on the
same prompt; system prompt, sampling settings, and a picture for vision-language models."""

from __future__ import annotations

import gradio as gr

from xtune.errors import XtuneError
from xtune.webui.chat_models import ChatModels, ChatRequest
from xtune.webui.context import WebContext, button, labelled

SAMPLING = {
    "max_new_tokens": (128, 1),
    "temperature": (0.7, None),
    "top_p": (0.9, None),
    "top_k": (40, 0),
    "repetition_penalty": (1.0, None),
    "seed": (-1, 0),
}  # key: (default, precision)


def _request(ctx: WebContext, model, adapter, compare, bits, template, *sampling) -> ChatRequest:
    settings = dict(zip(SAMPLING, sampling, strict=True))
    settings["seed"] = None if settings["seed"] is None or settings["seed"] < 0 else int(settings["seed"])
    settings["max_new_tokens"], settings["top_k"] = int(settings["max_new_tokens"]), int(settings["top_k"])
    adapter = str(ctx.paths.local(adapter, "adapter")) if (adapter or "").strip() else ""
    return ChatRequest(
        model=ctx.paths.model_or_hub(model, "model"),
        adapter=adapter,
        compare=bool(compare),
        bits={"4-bit": 4, "8-bit": 8}.get(bits),
        template=template or "",
        settings=settings,
    )


def _controls(ctx: WebContext) -> dict:
    ui = {}
    with gr.Row():
        ui["model"] = labelled(
            ctx,
            gr.Dropdown,
            "chat_model",
            choices=ctx.paths.find_models(),
            value=None,
            allow_custom_value=True,
            elem_id="chat_model",
            scale=3,
        )
        ui["adapter"] = labelled(
            ctx,
            gr.Dropdown,
            "chat_adapter",
            choices=[""] + ctx.paths.find_adapters(),
            value="",
            allow_custom_value=True,
            elem_id="chat_adapter",
            scale=3,
        )
        ui["compare"] = labelled(ctx, gr.Checkbox, "compare", value=False, elem_id="compare")
        ui["bits"] = labelled(
            ctx, gr.Dropdown, "bits", choices=["full", "8-bit", "4-bit"], value="full", elem_id="bits"
        )
        ui["template"] = labelled(
            ctx,
            gr.Dropdown,
            "template",
            value="",
            elem_id="chat_template",
            choices=[""] + sorted(t.name for t in ctx.registry.chat_templates),
        )
        ui["load"] = button(ctx, "load", variant="primary", elem_id="chat_load")
    with labelled(ctx, gr.Accordion, "sampling", open=True):
        with gr.Row():
            for key, (default, precision) in SAMPLING.items():
                ui[key] = labelled(ctx, gr.Number, key, value=default, precision=precision, elem_id=key)
        ui["system"] = labelled(ctx, gr.Textbox, "system", elem_id="system")
    return ui


def build_chat_tab(ctx: WebContext) -> dict:
    models = ChatModels(ctx.registry)
    ui = _controls(ctx)
    ui["status"] = gr.Markdown(elem_id="chat_status")
    with gr.Row():
        ui["base"] = labelled(ctx, gr.Chatbot, "base_answer", elem_id="chat_base", visible=False)
        ui["tuned"] = labelled(ctx, gr.Chatbot, "answer", elem_id="chat_tuned")
    with gr.Row():
        ui["image"] = labelled(ctx, gr.Image, "image", type="filepath", elem_id="chat_image", height=120)
        ui["message"] = labelled(ctx, gr.Textbox, "message", elem_id="chat_message", scale=4)
        ui["send"] = button(ctx, "send", variant="primary", elem_id="chat_send")
        ui["clear"] = button(ctx, "clear", elem_id="chat_clear")
    load_inputs = [ui[k] for k in ("model", "adapter", "compare", "bits", "template", *SAMPLING)]

    def load(*args):
        try:
            columns = models.load(_request(ctx, *args))
        except XtuneError as exc:
            return f"Error: {exc}", gr.update(), gr.update()
        compare = columns == ["base", "tuned"]
        tuned_label = ctx.labels("tuned_answer" if compare else "answer")
        return (
            f"{ctx.labels('loaded')}: {args[0]}" + (f" + {args[1]}" if args[1] else ""),
            gr.update(visible=compare, value=[]),
            gr.update(label=tuned_label, value=[]),
        )

    ui["load"].click(load, load_inputs, [ui["status"], ui["base"], ui["tuned"]])

    send = _sender(models)
    asking = [ui["message"], ui["system"], ui["image"]]
    answers = [ui["base"], ui["tuned"], ui["message"], ui["status"]]
    ui["send"].click(send, asking, answers)
    ui["message"].submit(send, asking, answers)

    def clear():
        models.reset()
        return [], [], ""

    ui["clear"].click(clear, None, [ui["base"], ui["tuned"], ui["status"]])
    return ui


def _sender(models: ChatModels):
    """The Send handler: both columns stream as their sessions generate; the message box empties."""

    def send(text, system, image):
        if not (text or "").strip():
            yield gr.update(), gr.update(), gr.update(), gr.update()
            return
        before = models.histories()
        try:
            for answers in models.ask(text, system, image):
                shown = [
                    h + [{"role": "user", "content": text}, {"role": "assistant", "content": a}]
                    for h, a in zip(before, answers, strict=True)
                ]
                yield _columns(shown) + ["", ""]
        except XtuneError as exc:
            yield gr.update(), gr.update(), "", f"Error: {exc}"
            return
        yield _columns(models.histories()) + ["", ""]

    return send


def _columns(histories: list[list[dict]]) -> list:
    """[base chat, tuned chat]: one session fills the right-hand column only."""
    return histories if len(histories) == 2 else [gr.update(), histories[0]]
