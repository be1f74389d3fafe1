"""Render a conversation with a chat template into text segments, each trained or ignored.

The data pipeline tokenizes the concatenated text once and labels the tokens that fall in trained
segments, so the segment boundaries are the label mask. The rules below follow the official
jinja templates that each `ChatTemplate` field reproduces (docs/templates.md); where an official
template raises, `render_segments` raises a UsageError instead of rendering something else.

Messages are dicts with "role" (system / user / assistant) and "content" (a string). An assistant
message with ``"loss": False`` or ``"loss_weight": 0`` is rendered but not trained; a
"reasoning_content" (or "thinking" / "reasoning") field is used by templates with think blocks.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from xtune.errors import UsageError, did_you_mean
from xtune.registry import ChatTemplate
from xtune.templates.messages import Message, check_messages
from xtune.templates.reasoning import add_qwen3_answer, last_query_index


@dataclass(frozen=True)
class Segment:
    """A piece of rendered text; `train` marks the text whose tokens get labels."""

    text: str
    train: bool

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "train": self.train}


def get_template(name: str | ChatTemplate, registry) -> ChatTemplate:
    """The template `name` from `registry` (a ChatTemplate passes through); an unknown name lists the closest.

    The registry is the caller's (the CLI's, a test's own): nothing here reaches for a process-wide one.
    """
    if isinstance(name, ChatTemplate):
        return name
    if registry is None:
        raise TypeError(f"get_template({name!r}): pass the registry to look a template up by name")
    table = registry.chat_templates
    if not isinstance(name, str) or name not in table:
        hint = did_you_mean(str(name), table.names()) or "see 'xtune template list'"
        raise UsageError(f"unknown chat template {name!r}", hint=hint)
    return table.get(name)


def tokenizer_tokens(tokenizer) -> dict[str, str]:
    """The {bos_token} / {eos_token} a tokenizer gives a template. Training, chat, the sample chats during
    training and the exported jinja all render with the model's own special tokens; a token the tokenizer
    lacks renders empty, as in transformers' `apply_chat_template`. Without a tokenizer (`template render`)
    the template's reference tokens stand in."""
    if tokenizer is None:
        return {}
    return {"bos_token": getattr(tokenizer, "bos_token", None) or "",
            "eos_token": getattr(tokenizer, "eos_token", None) or ""}


class _Text:
    """Collects segments, filling the render-time values into template strings."""

    def __init__(self, values: dict[str, str]):
        self.values = values
        self.segments: list[Segment] = []

    def fill(self, fmt: str, content: str = "") -> str:
        parts = fmt.split("{content}")
        for key, value in self.values.items():
            parts = [p.replace("{" + key + "}", value) for p in parts]
        return content.join(parts)

    def add(self, text: str, train: bool = False) -> None:
        if not text:
            return
        if self.segments and self.segments[-1].train == train:
            text = self.segments.pop().text + text
        self.segments.append(Segment(text, train))


def render_segments(template: str | ChatTemplate, messages: list[dict], add_generation_prompt: bool = False,
                    *, bos_token: str | None = None, eos_token: str | None = None,
                    date_string: str | None = None, enable_thinking: bool = True,
                    registry) -> list[Segment]:
    """Render `messages` with `template` into segments whose concatenation is the template's text.

    `bos_token` / `eos_token` default to the template's reference tokens (pass the tokenizer's, see
    `tokenizer_tokens`); `date_string` to the template's date (today's for templates with a `date_format`).
    With ``enable_thinking=False`` an empty think block of the answer counts as prompt, as the Qwen3
    template writes it into the generation prompt in that mode. `registry` resolves a template name (it
    may be None when `template` is a ChatTemplate).
    """
    t = get_template(template, registry)
    msgs = check_messages(t, messages)
    if date_string is None:
        date_string = datetime.datetime.now().strftime(t.date_format) if t.date_format else t.date_string
    tokens = {"bos_token": t.bos_token if bos_token is None else bos_token,
              "eos_token": t.eos_token if eos_token is None else eos_token}
    out = _Text({**tokens, "date_string": date_string})
    system, rest = _leading_system(t, msgs)
    _check_alternation(t, rest)
    fold_into = None  # the user message that receives the system text (first_user / last_user placement)
    if system is not None and t.system_placement == "first_user" and rest:
        fold_into = rest[0]
    elif system is not None and t.system_placement == "last_user" and rest and rest[-1].role == "user":
        fold_into = rest[-1]

    out.add(out.fill(t.bos))
    opened = None  # the user message whose round was opened before the system text
    if system is not None and t.system_placement in ("turn", "collect"):
        if rest and rest[0].role == "user":
            opened = rest[0]
            out.add(out.fill(t.round_start))
        if not (t.skip_empty_system and system == ""):
            out.add(out.fill(t.system, system))
    last_query = last_query_index(msgs) if t.reasoning else -1
    for m in rest:
        prefix = out.fill(t.system, system) if m is fold_into else ""
        _add_message(out, t, m, prefix, opened=m is opened, is_last=m is msgs[-1],
                     after_query=m.index > last_query, enable_thinking=enable_thinking)
    _add_ending(out, t, add_generation_prompt, enable_thinking)
    return out.segments


def _add_ending(out: _Text, t: ChatTemplate, add_generation_prompt: bool, enable_thinking: bool) -> None:
    """The generation prompt (with Qwen3's empty think block when thinking is off), or the closing text."""
    if add_generation_prompt or t.generation_prompt_always:
        out.add(out.fill(t.generation_prompt))
        if add_generation_prompt and not enable_thinking:
            out.add(out.fill(t.no_think_prompt))
    if not add_generation_prompt:
        out.add(out.fill(t.conversation_end))


def _leading_system(t: ChatTemplate, msgs: list[Message]) -> tuple[str | None, list[Message]]:
    """(system text or None, the messages after it), by the template's system placement."""
    system: str | None = None
    rest = msgs
    if t.system_placement == "collect":
        found = [m.content for m in msgs if m.role == "system"]
        rest = [m for m in msgs if m.role != "system"]
        system = t.system_joiner.join(found) if found else None
    elif msgs[0].role == "system":
        if t.system_placement == "refuse":
            raise UsageError(f"template {t.name!r} does not support a system message (message 0)",
                             hint="fold the instructions into the first user message")
        system, rest = msgs[0].content, msgs[1:]
    if system is None:
        system = t.default_system
    if system is not None and t.trim:
        system = system.strip()
    return system, rest


def _check_alternation(t: ChatTemplate, rest: list[Message]) -> None:
    if not t.alternate:
        return
    for position, m in enumerate(rest):
        if (m.role == "user") != (position % 2 == 0):
            raise UsageError(
                f"template {t.name!r}: roles must alternate user/assistant/user/... after the "
                f"optional system message; message {m.index} is {m.role!r}"
            )


def _add_message(out: _Text, t: ChatTemplate, m: Message, prefix: str, *, opened: bool, is_last: bool,
                 after_query: bool, enable_thinking: bool) -> None:
    """One message after the leading system text: a later system message, a user turn or an answer."""
    content = prefix + m.content
    if t.trim:
        content = content.strip()
    if m.role == "system":
        if t.later_system == "refuse":
            raise UsageError(
                f"template {t.name!r} cannot render a system message after the start (message {m.index})",
                             hint="move it to the start of the conversation")
        if t.later_system == "drop" or (t.skip_empty_system and content == ""):
            return
        out.add(out.fill(t.system if t.later_system == "same" else t.later_system, content))
    elif m.role == "user":
        if not opened:
            out.add(out.fill(t.round_start))
        out.add(out.fill(t.user, content))
    else:
        out.add(out.fill(t.generation_prompt))
        if t.reasoning == "qwen3":
            add_qwen3_answer(out, t, m, is_last=is_last, after_query=after_query,
                             enable_thinking=enable_thinking)
        else:
            out.add(out.fill(t.assistant, content), m.train)
        out.add(out.fill(t.assistant_end), m.train)
        out.add(out.fill(t.assistant_suffix))


def render_text(template: str | ChatTemplate, messages: list[dict], add_generation_prompt: bool = False,
                *, registry, **kwargs: Any) -> str:
    """The rendered conversation as one string (what the official `apply_chat_template` returns)."""
    return "".join(s.text for s in render_segments(template, messages, add_generation_prompt,
                                                   registry=registry, **kwargs))


def render_prompt(template: str | ChatTemplate, messages: list[dict], tokenizer, *, registry,
                  **kwargs: Any) -> str:
    """The text a model is prompted with to answer `messages`: the template with the tokenizer's own
    special tokens and the generation prompt, as in training (chat and the sample chats use this)."""
    return render_text(template, messages, True, registry=registry, **tokenizer_tokens(tokenizer), **kwargs)
