"""Record converters: one function per record format, each turning a raw record into a conversation.

The registry's dataset maps name these as ``"xtune.data.formats:<name>"``. Every converter takes the
record and keyword options; the options are the map's column names (field the converter reads ->
column in the data, None when the data has no such column) plus format settings such as sharegpt's
role tags. A converter raises RecordError naming the field; the pipeline adds file and line.
"""

from __future__ import annotations

import json
import re
from typing import Any

from xtune.data.conversation import RecordError, message, require_text


def _get(record: dict, column: str | None) -> Any:
    return None if column is None else record.get(column)


def _optional_text(record: dict, column: str | None) -> str:
    value = _get(record, column)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RecordError(f"must be a string, got {type(value).__name__}", column)
    return value


def _history(record: dict, column: str | None) -> list[dict]:
    """alpaca/LLaMA-Factory `history`: a list of [question, answer] pairs before the final turn."""
    value = _get(record, column)
    if value in (None, []):
        return []
    if not isinstance(value, list):
        raise RecordError("must be a list of [question, answer] pairs", column)
    out = []
    for i, pair in enumerate(value):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(s, str) for s in pair)):
            raise RecordError(f"entry {i} must be a [question, answer] pair of strings", column)
        out += [message("user", pair[0]), message("assistant", pair[1])]
    return out


def alpaca(record: dict, *, instruction: str | None = "instruction", input: str | None = "input",
           output: str | None = "output", system: str | None = "system", history: str | None = "history",
           **_: Any) -> list[dict]:
    """instruction (+ input on the next line) -> output, after an optional system and history."""
    prompt = require_text(_get(record, instruction), instruction or "instruction")
    extra = _optional_text(record, input)
    if extra.strip():
        prompt = f"{prompt}\n{extra}"
    answer = require_text(_get(record, output), output or "output", allow_empty=True)
    messages = []
    sys_text = _optional_text(record, system)
    if sys_text:
        messages.append(message("system", sys_text))
    return messages + _history(record, history) + [message("user", prompt), message("assistant", answer)]


# Defaults for sharegpt; LLaMA-Factory's dataset_info.json calls these "tags".
SHAREGPT_TAGS = dict(role_tag="from", content_tag="value", user_tag="human", assistant_tag="gpt",
                     system_tag="system", function_tag="function_call", observation_tag="observation")


def sharegpt(record: dict, *, messages: str | None = "conversations", system: str | None = "system",
             tools: str | None = "tools", **options: Any) -> list[dict]:
    """conversations [{from, value}]: human / gpt / system / function_call / observation.

    A function call is an assistant turn (trained: the model must learn to emit it) and an
    observation is a tool answer (never trained). Tool schemas (`tools`, as in glaive data) are
    appended to the system prompt as given: xtune's templates have no tool slot of their own, and
    dropping the schemas would train calls to functions the model was never shown.
    """
    tags = {**SHAREGPT_TAGS, **{k: v for k, v in options.items() if k in SHAREGPT_TAGS}}
    roles = {tags["user_tag"]: "user", tags["assistant_tag"]: "assistant", tags["system_tag"]: "system",
             tags["function_tag"]: "assistant", tags["observation_tag"]: "tool"}
    for alias, role in (("user", "user"), ("assistant", "assistant"), ("tool", "tool")):
        roles.setdefault(alias, role)
    turns = _get(record, messages)
    field = messages or "conversations"
    if turns is None:
        raise RecordError("is missing", field)
    if not isinstance(turns, list) or not turns:
        raise RecordError("must be a non-empty list of turns", field)
    out = []
    sys_text = _optional_text(record, system)
    schema = _get(record, tools)
    if schema not in (None, "", [], "[]"):
        schema = schema if isinstance(schema, str) else json.dumps(schema, ensure_ascii=False)
        sys_text = f"{sys_text}\n\n{schema}" if sys_text else schema
    if sys_text:
        out.append(message("system", sys_text))
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict):
            raise RecordError(f"turn {i} must be an object", field)
        tag = turn.get(tags["role_tag"])
        if tag not in roles:
            raise RecordError(
                f"turn {i} has unknown role {tag!r} (valid: {', '.join(sorted(map(str, roles)))})",
                              f"{field}[{i}].{tags['role_tag']}")
        content = require_text(turn.get(tags["content_tag"]), f"{field}[{i}].{tags['content_tag']}",
                               allow_empty=True)
        out.append(message(roles[tag], content))
    return out


def _content_text(content: Any, field: str) -> str:
    """OpenAI content: a string, or a list of parts of which the text ones are joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                text = part.get("text", part.get("value"))
                texts.append(require_text(text, f"{field}[{j}].text", allow_empty=True))
            else:
                raise RecordError(f"part {j} is not a text part (only text content is supported)", field)
        return "".join(texts)
    raise RecordError(f"must be a string or a list of text parts, got {type(content).__name__}", field)


def openai(record: dict, *, messages: str | None = "messages", **_: Any) -> list[dict]:
    """messages [{role, content}] with an optional per-message `loss` (bool) or `loss_weight` (0 or 1)."""
    field = messages or "messages"
    turns = _get(record, messages)
    if turns is None:
        raise RecordError("is missing", field)
    if not isinstance(turns, list) or not turns:
        raise RecordError("must be a non-empty list of messages", field)
    out = []
    for i, msg in enumerate(turns):
        if not isinstance(msg, dict):
            raise RecordError(f"message {i} must be an object", field)
        role = msg.get("role")
        if role == "function":  # the pre-"tool" name of the same thing
            role = "tool"
        content = _content_text(msg.get("content"), f"{field}[{i}].content")
        loss = None
        if "loss" in msg and msg["loss"] is not None:
            if not isinstance(msg["loss"], bool):
                raise RecordError("must be true or false", f"{field}[{i}].loss")
            loss = msg["loss"]
        elif msg.get("loss_weight") is not None:
            weight = msg["loss_weight"]
            if isinstance(weight, bool) or weight not in (0, 1):
                raise RecordError(f"must be 0 or 1 (a message is trained or not), got {weight!r}",
                                  f"{field}[{i}].loss_weight")
            loss = weight == 1
        out.append(message(role, content, loss))
    return out


_OASST_TURN = re.compile(r"### (Human|Assistant):")


def oasst1(record: dict, *, text: str | None = "text", **_: Any) -> list[dict]:
    """openassistant-guanaco's '### Human: ... ### Assistant: ...' text, split into turns."""
    field = text or "text"
    body = require_text(_get(record, text), field)
    parts = _OASST_TURN.split(body)
    if parts[0].strip():
        raise RecordError("must start with '### Human:'", field)
    out = []
    for speaker, content in zip(parts[1::2], parts[2::2], strict=False):
        out.append(message("user" if speaker == "Human" else "assistant", content.strip()))
    if not out:
        raise RecordError("has no '### Human:' / '### Assistant:' turns", field)
    return out


def pretrain(record: dict, *, text: str | None = "text", **_: Any) -> list[dict]:
    """Plain text: one assistant-less 'text' message; the tokenizer step trains every token of it."""
    return [{"role": "text", "content": require_text(_get(record, text), text or "text"), "loss": True}]


_MOSS_PREFIX = {"Human": ("<|Human|>:", "<eoh>"), "MOSS": ("<|MOSS|>:", "<eom>")}


def _moss_text(turn: dict, key: str, where: str) -> str:
    value = require_text(turn.get(key), where, allow_empty=True).strip()
    prefix, suffix = _MOSS_PREFIX[key]
    if value.startswith(prefix):
        value = value[len(prefix):]
    if value.endswith(suffix):
        value = value[: -len(suffix)]
    return value.strip()


def moss(record: dict, *, chat: str | None = "chat", system: str | None = "meta_instruction",
         **_: Any) -> list[dict]:
    """MOSS-003 SFT: chat {turn_1: {Human, MOSS, ...}}; plugin thoughts/commands are not trained."""
    field = chat or "chat"
    turns = _get(record, chat)
    if not isinstance(turns, dict) or not turns:
        raise RecordError("must be an object of turns ({'turn_1': {'Human': ..., 'MOSS': ...}})", field)
    out = []
    sys_text = _optional_text(record, system).strip()
    if sys_text:
        out.append(message("system", sys_text))

    def order(key: str) -> int:
        return int(key.rsplit("_", 1)[-1]) if key.rsplit("_", 1)[-1].isdigit() else 0

    for key in sorted(turns, key=order):
        turn = turns[key]
        if not isinstance(turn, dict):
            raise RecordError("must be an object", f"{field}.{key}")
        out.append(message("user", _moss_text(turn, "Human", f"{field}.{key}.Human")))
        out.append(message("assistant", _moss_text(turn, "MOSS", f"{field}.{key}.MOSS")))
    return out


_PLACEHOLDERS = {"name": ("{{name}}", "<NAME>"), "author": ("{{author}}", "<AUTHOR>")}


def fill_placeholders(text: str, name: str, author: str) -> str:
    for placeholder in _PLACEHOLDERS["name"]:
        text = text.replace(placeholder, name)
    for placeholder in _PLACEHOLDERS["author"]:
        text = text.replace(placeholder, author)
    return text


def self_cognition(record: dict, *, name: str = "xtune assistant", author: str = "the xtune team",
                   **columns: Any) -> list[dict]:
    """alpaca records whose {{name}} / <NAME> / {{author}} / <AUTHOR> become the recipe's values."""
    messages = alpaca(record, **columns)
    return [{**m, "content": fill_placeholders(m["content"], name, author)} for m in messages]
