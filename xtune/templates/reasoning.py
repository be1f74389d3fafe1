"""Think blocks as Qwen3 renders them: the reasoning of an answer, and which answers keep it."""

from __future__ import annotations

from xtune.registry import ChatTemplate
from xtune.templates.messages import Message

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


def split_think(message: Message) -> tuple[str, str]:
    """(reasoning, answer) of an assistant message, read the way Qwen3's template reads them."""
    content = message.content
    if message.reasoning is not None:
        return message.reasoning, content
    if THINK_CLOSE in content:
        reasoning = content.split(THINK_CLOSE)[0].rstrip("\n").split(THINK_OPEN)[-1].lstrip("\n")
        return reasoning, content.split(THINK_CLOSE)[-1].lstrip("\n")
    return "", content


def last_query_index(messages: list[Message]) -> int:
    """Index of the last user message that is not a wrapped tool response (Qwen3's `last_query_index`)."""
    for m in reversed(messages):
        wrapped = m.content.startswith("<tool_response>") and m.content.endswith("</tool_response>")
        if m.role == "user" and not wrapped:
            return m.index
    return len(messages) - 1


def add_qwen3_answer(out, t: ChatTemplate, m: Message, *, is_last: bool, after_query: bool,
                     enable_thinking: bool) -> None:
    """Add an answer to `out` (the renderer's segment collector) as Qwen3 does: it keeps the think block
    only on answers after the last user query, always on the final message and on earlier ones when they
    have reasoning. History answers lose their reasoning."""
    reasoning, answer = split_think(m)
    if after_query and (is_last or reasoning):
        think = f"{THINK_OPEN}\n{reasoning.strip(chr(10))}\n{THINK_CLOSE}\n\n"
        # An empty block is what Qwen3 writes into the prompt when thinking is off: prompt, not answer.
        prompt_side = not enable_thinking and not reasoning.strip("\n")
        out.add(think, m.train and not prompt_side)
        answer = answer.lstrip("\n")
    out.add(out.fill(t.assistant, answer), m.train)
