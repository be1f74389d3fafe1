"""xtune's one internal conversation form, and the checks every converter's output goes through.

A conversation is a list of messages ``{"role": str, "content": str, "loss": bool}``. Roles are
``system`` (at most one, first), ``user``, ``assistant`` and ``tool`` (a tool's answer, as sharegpt's
``observation``). Only assistant messages can carry ``loss=True``; by default every assistant turn is
trained, and ``train_on="last_turn"`` keeps only the final one. Keeping this form tiny is what lets
every record format share one template renderer and one label-masking routine.
"""

from __future__ import annotations

from typing import Any

ROLES = ("system", "user", "assistant", "tool")
TRAIN_ON = ("all_turns", "last_turn")


class RecordError(ValueError):
    """One record is malformed. `field` names the offending field; the caller adds file and line."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field

    def describe(self) -> str:
        return f"field {self.field!r}: {self}" if self.field else str(self)


def message(role: str, content: str, loss: bool | None = None) -> dict[str, Any]:
    """A message; `loss` defaults to True for assistant turns and False for everything else."""
    return {"role": role, "content": content, "loss": (role == "assistant") if loss is None else bool(loss)}


def require_text(value: Any, field: str, *, allow_empty: bool = False) -> str:
    """`value` as a string, or a RecordError naming `field` (missing, wrong type, empty)."""
    if value is None:
        raise RecordError("is missing", field)
    if not isinstance(value, str):
        raise RecordError(f"must be a string, got {type(value).__name__}", field)
    if not allow_empty and not value.strip():
        raise RecordError("is empty", field)
    return value


def validate(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Check the shape every template relies on; return the messages unchanged.

    A chat must start with an optional system message, contain at least one user turn and end
    with an assistant turn; something must be trained, or the sample teaches nothing.
    """
    if not messages:
        raise RecordError("the conversation has no messages")
    for i, msg in enumerate(messages):
        role = msg.get("role")
        if role not in ROLES:
            raise RecordError(f"message {i} has unknown role {role!r} (valid: {', '.join(ROLES)})", "role")
        if not isinstance(msg.get("content"), str):
            raise RecordError(f"message {i} content must be a string", "content")
        if role == "system" and i != 0:
            raise RecordError(f"message {i}: a system message may only come first", "role")
        if msg.get("loss") and role != "assistant":
            raise RecordError(f"message {i}: only assistant messages can be trained (role {role!r})", "loss")
    body = [m for m in messages if m["role"] != "system"]
    if not body or body[0]["role"] not in ("user", "tool"):
        raise RecordError("the conversation must start with a user message (after an optional system one)")
    if messages[-1]["role"] != "assistant":
        raise RecordError("the conversation must end with an assistant message")
    if not any(m["loss"] for m in messages):
        raise RecordError("no assistant message is trained (every loss flag is off)", "loss")
    return messages


def apply_settings(messages: list[dict[str, Any]], *, system: str = "", train_on: str = "all_turns"):
    """Apply a recipe's `system` prompt (only where the record has none) and its `train_on` switch.

    Unanswered turns at the end (a last question with no reply, common in scraped chats) are cut:
    nothing in them is trained, and every chat template expects a conversation to end on an answer.
    """
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be one of {', '.join(TRAIN_ON)}, got {train_on!r}")
    out = [dict(m) for m in messages]
    has_answer = any(m.get("role") == "assistant" for m in out)
    while len(out) > 1 and out[-1].get("role") in ("user", "tool") and has_answer:
        out.pop()
    if system and not (out and out[0]["role"] == "system"):
        out.insert(0, message("system", system))
    if train_on == "last_turn":
        last = max(i for i, m in enumerate(out) if m["role"] == "assistant")
        for i, m in enumerate(out):
            if i != last:
                m["loss"] = False
    return out
