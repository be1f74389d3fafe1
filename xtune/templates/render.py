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

ROLES = ("system", "user", "assistant")
_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")  # the aliases transformers accepts
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class Segment:
    """A piece of rendered text; `train` marks the text whose tokens get labels."""

    text: str
    train: bool

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "train": self.train}


def get_template(name: str | ChatTemplate, registry=None) -> ChatTemplate:
    """The template `name` from `registry` (a ChatTemplate passes through); an unknown name lists the closest.

    Callers that have the run's registry pass it; without one, the process-wide registry is used.
    """
    if isinstance(name, ChatTemplate):
        return name
    if registry is None:
        from xtune.plugins import get_registry

        registry = get_registry()
    table = registry.chat_templates
    if not isinstance(name, str) or name not in table:
        hint = did_you_mean(str(name), table.names()) or "see 'xtune template list'"
        raise UsageError(f"unknown chat template {name!r}", hint=hint)
    return table.get(name)


def tokenizer_tokens(tokenizer) -> dict[str, str | None]:
    """The {bos_token} / {eos_token} a tokenizer gives a template: training, chat, the sample chats during
    training and the exported jinja all render with the model's own special tokens (None: the tokenizer
    has none, and the template's reference token stands in)."""
    if tokenizer is None:
        return {}
    return {"bos_token": getattr(tokenizer, "bos_token", None), "eos_token": getattr(tokenizer, "eos_token", None)}


@dataclass
class _Message:
    index: int  # position in the caller's list, for error messages and Qwen3's last-query rule
    role: str
    content: str
    train: bool
    reasoning: str | None


def _check_messages(template: ChatTemplate, messages: Any) -> list[_Message]:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise UsageError(f"template {template.name!r}: messages must be a non-empty list of "
                         f"{{'role', 'content'}} objects, got {type(messages).__name__}")
    checked = []
    for i, message in enumerate(messages):
        where = f"template {template.name!r}: message {i}"
        if not isinstance(message, dict):
            raise UsageError(f"{where}: expected an object with 'role' and 'content', got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise UsageError(f"{where}: the template cannot render role {role!r}",
                             hint=f"it renders: {', '.join(ROLES)}")
        content = message.get("content")
        if not isinstance(content, str):
            raise UsageError(f"{where} ({role}): field 'content' must be a string, got {type(content).__name__}")
        train = role == "assistant" and message.get("loss", True) is not False and message.get("loss_weight", 1) != 0
        reasoning = next((message[k] for k in _REASONING_KEYS if message.get(k) is not None), None)
        if reasoning is not None and not isinstance(reasoning, str):
            raise UsageError(f"{where} ({role}): field 'reasoning_content' must be a string")
        checked.append(_Message(i, role, content, train, reasoning))
    return checked


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


def _split_think(message: _Message) -> tuple[str, str]:
    """(reasoning, answer) of an assistant message, read the way Qwen3's template reads them."""
    content = message.content
    if message.reasoning is not None:
        return message.reasoning, content
    if _THINK_CLOSE in content:
        reasoning = content.split(_THINK_CLOSE)[0].rstrip("\n").split(_THINK_OPEN)[-1].lstrip("\n")
        return reasoning, content.split(_THINK_CLOSE)[-1].lstrip("\n")
    return "", content


def _last_query_index(messages: list[_Message]) -> int:
    """Index of the last user message that is not a wrapped tool response (Qwen3's `last_query_index`)."""
    for m in reversed(messages):
        wrapped = m.content.startswith("<tool_response>") and m.content.endswith("</tool_response>")
        if m.role == "user" and not wrapped:
            return m.index
    return len(messages) - 1


def render_segments(template: str | ChatTemplate, messages: list[dict], add_generation_prompt: bool = False, *,
                    bos_token: str | None = None, eos_token: str | None = None, date_string: str | None = None,
                    enable_thinking: bool = True, registry=None) -> list[Segment]:
    """Render `messages` with `template` into segments whose concatenation is the template's text.

    `bos_token` / `eos_token` default to the template's reference tokens (pass the tokenizer's, see
    `tokenizer_tokens`); `date_string` to the template's date (today's for templates with a `date_format`).
    With ``enable_thinking=False`` an empty think block of the answer counts as prompt, as the Qwen3
    template writes it into the generation prompt in that mode.
    """
    t = get_template(template, registry)
    msgs = _check_messages(t, messages)
    if date_string is None:
        date_string = datetime.datetime.now().strftime(t.date_format) if t.date_format else t.date_string
    out = _Text({"bos_token": t.bos_token if bos_token is None else bos_token,
                 "eos_token": t.eos_token if eos_token is None else eos_token,
                 "date_string": date_string})
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
    last_query = _last_query_index(msgs) if t.reasoning else -1
    for m in rest:
        prefix = out.fill(t.system, system) if m is fold_into else ""
        _add_message(out, t, m, prefix, opened=m is opened, is_last=m is msgs[-1],
                     after_query=m.index > last_query, enable_thinking=enable_thinking)
    if add_generation_prompt or t.generation_prompt_always:
        out.add(out.fill(t.generation_prompt))
        if add_generation_prompt and not enable_thinking:
            out.add(out.fill(t.no_think_prompt))
    if not add_generation_prompt:
        out.add(out.fill(t.conversation_end))
    return out.segments


def _leading_system(t: ChatTemplate, msgs: list[_Message]) -> tuple[str | None, list[_Message]]:
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


def _check_alternation(t: ChatTemplate, rest: list[_Message]) -> None:
    if not t.alternate:
        return
    for position, m in enumerate(rest):
        if (m.role == "user") != (position % 2 == 0):
            raise UsageError(f"template {t.name!r}: roles must alternate user/assistant/user/... after the "
                             f"optional system message; message {m.index} is {m.role!r}")


def _add_message(out: _Text, t: ChatTemplate, m: _Message, prefix: str, *, opened: bool, is_last: bool,
                 after_query: bool, enable_thinking: bool) -> None:
    """One message after the leading system text: a later system message, a user turn or an answer."""
    content = prefix + m.content
    if t.trim:
        content = content.strip()
    if m.role == "system":
        if t.later_system == "refuse":
            raise UsageError(f"template {t.name!r} cannot render a system message after the start "
                             f"(message {m.index})", hint="move it to the start of the conversation")
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
            _add_qwen3_answer(out, t, m, is_last=is_last, after_query=after_query, enable_thinking=enable_thinking)
        else:
            out.add(out.fill(t.assistant, content), m.train)
        out.add(out.fill(t.assistant_end), m.train)
        out.add(out.fill(t.assistant_suffix))


def _add_qwen3_answer(out: _Text, t: ChatTemplate, m: _Message, *, is_last: bool, after_query: bool,
                      enable_thinking: bool) -> None:
    """Qwen3 keeps the think block only on answers after the last user query: always on the final
    message, on earlier ones when they have reasoning. History answers lose their reasoning."""
    reasoning, answer = _split_think(m)
    if after_query and (is_last or reasoning):
        think = f"{_THINK_OPEN}\n{reasoning.strip(chr(10))}\n{_THINK_CLOSE}\n\n"
        # An empty block is what Qwen3 writes into the prompt when thinking is off: prompt, not answer.
        prompt_side = not enable_thinking and not reasoning.strip("\n")
        out.add(think, m.train and not prompt_side)
        answer = answer.lstrip("\n")
    out.add(out.fill(t.assistant, answer), m.train)


def render_text(template: str | ChatTemplate, messages: list[dict], add_generation_prompt: bool = False,
                **kwargs: Any) -> str:
    """The rendered conversation as one string (what the official `apply_chat_template` returns)."""
    return "".join(s.text for s in render_segments(template, messages, add_generation_prompt, **kwargs))


def render_prompt(template: str | ChatTemplate, messages: list[dict], tokenizer, *, registry=None,
                  **kwargs: Any) -> str:
    """The text a model is prompted with to answer `messages`: the template with the tokenizer's own
    special tokens and the generation prompt, as in training (chat and the sample chats use this)."""
    return render_text(template, messages, True, registry=registry, **tokenizer_tokens(tokenizer), **kwargs)
