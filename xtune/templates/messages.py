"""The messages a template renders, checked once: roles, string contents, which answers are trained, and
the reasoning text of models that think (under any of the names transformers accepts)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xtune.errors import UsageError
from xtune.registry import ChatTemplate
from xtune.templates.images import lead_content

ROLES = ("system", "user", "assistant")
_REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")  # the aliases transformers accepts


@dataclass
class Message:
    index: int  # position in the caller's list, for error messages and Qwen3's last-query rule
    role: str
    content: str
    train: bool
    reasoning: str | None


def check_messages(template: ChatTemplate, messages: Any) -> list[Message]:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise UsageError(
            f"template {template.name!r}: messages must be a non-empty list of "
            f"{{'role', 'content'}} objects, got {type(messages).__name__}"
        )
    checked = []
    for i, message in enumerate(messages):
        where = f"template {template.name!r}: message {i}"
        if not isinstance(message, dict):
            raise UsageError(
                f"{where}: expected an object with 'role' and 'content', got {type(message).__name__}")
        role = message.get("role")
        if role not in ROLES:
            raise UsageError(f"{where}: the template cannot render role {role!r}",
                             hint=f"it renders: {', '.join(ROLES)}")
        content = message.get("content")
        if not isinstance(content, str):
            raise UsageError(
                f"{where} ({role}): field 'content' must be a string, got {type(content).__name__}")
        train = (role == "assistant" and message.get("loss", True) is not False
                 and message.get("loss_weight", 1) != 0)
        reasoning = next((message[k] for k in _REASONING_KEYS if message.get(k) is not None), None)
        if reasoning is not None and not isinstance(reasoning, str):
            raise UsageError(f"{where} ({role}): field 'reasoning_content' must be a string")
        checked.append(Message(i, role, lead_content(content, template.content_lead), train, reasoning))
    return checked
