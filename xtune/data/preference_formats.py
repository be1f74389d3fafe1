"""Preference record converters: one function per layout, each turning a raw record into a pair or a KTO item.

A pair is ``{"prompt": messages, "chosen": messages, "rejected": messages}``: the prompt is a conversation
that ends on a user turn (earlier answers in it are context, never trained) and each side is the answer
(assistant messages) that continues it. A KTO item is ``{"prompt": messages, "completion": messages,
"label": bool}``. The checks every item goes through (a missing side, chosen equal to rejected, a prompt
that is no conversation) are in `xtune.data.preference`; a converter raises RecordError naming the field.
"""

from __future__ import annotations

import re
from typing import Any

from xtune.data.conversation import RecordError, message, require_text
from xtune.data.formats import SHAREGPT_TAGS, _get, _history, _optional_text, openai, sharegpt


def _context(messages: list[dict]) -> list[dict]:
    """Prompt messages: shown to the model, never trained."""
    return [{**m, "loss": False} for m in messages]


def _answer(value: Any, field: str, tags: dict | None = None) -> list[dict]:
    """One side of a pair: a string, a sharegpt turn {from, value}, a message {role, content} or a list of
    messages (the answer's turns)."""
    if value is None:
        raise RecordError("is missing", field)
    if isinstance(value, str):
        return [message("assistant", value)]
    if isinstance(value, dict) and tags and tags["content_tag"] in value and "content" not in value:
        return [message("assistant", require_text(value.get(tags["content_tag"]), field, allow_empty=True))]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RecordError("must be a string, a message or a non-empty list of messages", field)
    return [{**m, "loss": m["role"] == "assistant"} for m in openai({"messages": value}, messages="messages")]


def _split_prompt(chosen: list[dict], rejected: list[dict], field: str) -> tuple[list, list, list]:
    """Full conversations on both sides: the prompt is their common beginning (TRL's implicit prompt)."""
    n = 0
    while (n < min(len(chosen), len(rejected)) - 1 and chosen[n]["role"] == rejected[n]["role"]
           and chosen[n]["content"] == rejected[n]["content"]):
        n += 1
    while n > 0 and chosen[n - 1]["role"] == "assistant":  # an answer starts after the last user turn
        n -= 1
    if n == 0:
        raise RecordError("chosen and rejected share no prompt (no common user turn at the start)", field)
    return _context(chosen[:n]), chosen[n:], rejected[n:]


def _pair(prompt: list[dict], chosen: list[dict], rejected: list[dict], system: str = "") -> dict:
    if system and not (prompt and prompt[0]["role"] == "system"):
        prompt = [message("system", system)] + prompt
    return {"prompt": prompt, "chosen": chosen, "rejected": rejected}


def sharegpt_preference(record: dict, *, messages: str | None = "conversations",
                        chosen: str | None = "chosen", rejected: str | None = "rejected",
                        system: str | None = "system", tools: str | None = "tools", **options: Any) -> dict:
    """LLaMA-Factory's ranking sharegpt: conversations [{from, value}] ending on a user turn, and the chosen
    and rejected answers as turns {from, value} (or plain strings, as MedicalGPT's DPO files have them)."""
    tags = {**SHAREGPT_TAGS, **{k: v for k, v in options.items() if k in SHAREGPT_TAGS}}
    prompt = sharegpt(record, messages=messages, system=system, tools=tools, **options)
    return _pair(_context(prompt), _answer(_get(record, chosen), chosen or "chosen", tags),
                 _answer(_get(record, rejected), rejected or "rejected", tags))


sharegpt_preference.tags = True  # takes sharegpt's role tags as options


def preference(record: dict, *, prompt: str | None = "prompt", chosen: str | None = "chosen",
               rejected: str | None = "rejected", system: str | None = "system", **_: Any) -> dict:
    """TRL's preference format: prompt / chosen / rejected as text or as messages. When chosen and rejected
    are whole conversations (UltraFeedback, LLaMA-Factory v1), the prompt is their common beginning."""
    c_field, r_field = chosen or "chosen", rejected or "rejected"
    good, bad = _answer(_get(record, chosen), c_field), _answer(_get(record, rejected), r_field)
    sys_text = _optional_text(record, system)
    if any(m["role"] != "assistant" for m in good + bad):
        return _pair(*_split_prompt(good, bad, c_field), system=sys_text)
    value = _get(record, prompt)
    p_field = prompt or "prompt"
    if value is None:
        raise RecordError("is missing (answers without a prompt: use the hh_rlhf format for full texts)",
                          p_field)
    if isinstance(value, str):
        turns = [message("user", require_text(value, p_field))]
    elif isinstance(value, list) and value:
        turns = openai({"messages": value}, messages="messages")
    else:
        raise RecordError("must be a string or a non-empty list of messages", p_field)
    return _pair(_context(turns), good, bad, system=sys_text)


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def _hh_turns(text: Any, field: str) -> list[dict]:
    body = require_text(text, field)
    parts = _HH_TURN.split("\n\n" + body.lstrip("\n") if not body.startswith("\n\n") else body)
    if parts[0].strip():
        raise RecordError("must start with 'Human:'", field)
    turns = [message("user" if who == "Human" else "assistant", said.strip())
             for who, said in zip(parts[1::2], parts[2::2], strict=False)]
    if not turns or turns[-1]["role"] != "assistant":
        raise RecordError("must end with an 'Assistant:' answer", field)
    return turns


def hh_rlhf(record: dict, *, chosen: str | None = "chosen", rejected: str | None = "rejected",
            **_: Any) -> dict:
    """Anthropic HH-RLHF: two full '\\n\\nHuman: ... \\n\\nAssistant: ...' texts that differ in the last
    answer."""
    c_field, r_field = chosen or "chosen", rejected or "rejected"
    return _pair(*_split_prompt(_hh_turns(_get(record, chosen), c_field), _hh_turns(_get(record, rejected),
                                                                                      r_field), c_field))


def medicalgpt_preference(record: dict, *, question: str | None = "question",
                          chosen: str | None = "response_chosen", rejected: str | None = "response_rejected",
                          system: str | None = "system", history: str | None = "history",
                          messages: str | None = "conversations", **options: Any) -> dict:
    """MedicalGPT's reward / DPO JSONL: question (+ history, system) with response_chosen / response_rejected;
    records with sharegpt `conversations` instead of a question (its DPO files) work too."""
    if _get(record, messages) is not None:
        return sharegpt_preference(record, messages=messages, chosen=chosen, rejected=rejected, system=system,
                                   **options)
    turns = _history(record, history) + [message("user", require_text(_get(record, question),
                                                                      question or "question"))]
    return _pair(_context(turns), _answer(_get(record, chosen), chosen or "response_chosen"),
                 _answer(_get(record, rejected), rejected or "response_rejected"),
                 system=_optional_text(record, system))


def alpaca_preference(record: dict, *, instruction: str | None = "instruction", input: str | None = "input",
                      output: str | None = "output", chosen: str | None = "chosen",
                      rejected: str | None = "rejected", system: str | None = "system",
                      history: str | None = "history", **_: Any) -> dict:
    """LLaMA-Factory's ranking alpaca (its reward-model files): instruction (+ input, history) with `output`
    answers ranked best first (the first two make the pair, as LLaMA-Factory takes them), or separate
    chosen / rejected columns."""
    prompt = require_text(_get(record, instruction), instruction or "instruction")
    extra = _optional_text(record, input)
    turns = _history(record, history) + [message("user", f"{prompt}\n{extra}" if extra.strip() else prompt)]
    ranked = _get(record, output)
    if ranked is not None:
        if not (isinstance(ranked, list) and len(ranked) >= 2):
            raise RecordError("must be a list of at least two answers, best first", output)
        good, bad = ranked[:2]
        c_field = r_field = output
    else:
        good, bad = _get(record, chosen), _get(record, rejected)
        c_field, r_field = chosen or "chosen", rejected or "rejected"
    return _pair(_context(turns), _answer(good, f"{c_field}" + ("[0]" if ranked else "")),
                 _answer(bad, f"{r_field}" + ("[1]" if ranked else "")),
                 system=_optional_text(record, system))


def kto(record: dict, *, prompt: str | None = "prompt", completion: str | None = "completion",
        label: str | None = "label", messages: str | None = "messages", system: str | None = "system",
        **options: Any) -> dict:
    """KTO's unpaired records: TRL's prompt / completion / label (text or messages), or a conversation whose
    last answer is judged (`messages` with LLaMA-Factory's `kto_tag` as `label`)."""
    _kto_fields_present(record, prompt, completion, label, messages)
    value = _get(record, label)
    if not isinstance(value, bool) and value not in (0, 1):
        raise RecordError(f"must be true or false, got {value!r}", label or "label")
    turns = _get(record, messages)
    if turns is not None:
        if not isinstance(turns, list) or not turns:
            raise RecordError("must be a non-empty list of messages", messages)
        chat = openai(record, messages=messages) if isinstance(turns[0], dict) and "role" in turns[0] \
            else sharegpt(record, messages=messages, system=system, **options)
        if chat[-1]["role"] != "assistant":
            raise RecordError("must end with the assistant answer that is judged", messages)
        return {"prompt": _context(chat[:-1]), "completion": [message("assistant", chat[-1]["content"])],
                "label": bool(value)}
    text = _get(record, prompt)
    p_field = prompt or "prompt"
    turns = [message("user", require_text(text, p_field))] if isinstance(text, str) or text is None \
        else openai({"messages": text}, messages="messages")
    sys_text = _optional_text(record, system)
    if sys_text:
        turns = [message("system", sys_text)] + turns
    answer = _answer(_get(record, completion), completion or "completion")
    return {"prompt": _context(turns), "completion": answer, "label": bool(value)}


def _kto_fields_present(record: dict, prompt, completion, label, messages) -> None:
    """Every field a KTO record lacks, named at once: a file of another layout (alpaca's instruction /
    output) would otherwise reveal them one run at a time, label first."""
    wanted = [(label, "label")] + ([] if _get(record, messages) is not None else
                                   [(prompt, "prompt"), (completion, "completion")])
    missing = [name or default for name, default in wanted if _get(record, name) is None]
    layout = (f"a KTO record has {prompt or 'prompt'}, {completion or 'completion'} and {label or 'label'}, "
              f"or {messages or 'messages'} and {label or 'label'}")
    if len(missing) == 1:
        raise RecordError(f"is missing ({layout})", missing[0])
    if missing:
        raise RecordError(f"fields {', '.join(map(repr, missing))} are missing ({layout}; this record has "
                          f"{', '.join(map(repr, record)) or 'no fields'})")


kto.tags = True
