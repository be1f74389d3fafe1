"""Prompt record converters for online RL (GRPO): a prompt to answer and the columns its rewards read.

A prompt item is ``{"prompt": messages, "columns": {name: value}}``: the prompt is a conversation that ends
on a user turn (nothing in it is trained: the policy writes the answers), and `columns` are what the reward
functions are called with beside the completions (`answer`, the reference a math checker compares with).
The reference answer is cut out of the record here, once, so every reward function reads the same clean
value (GSM8K's ``#### 72`` -> ``72``) instead of each re-parsing the worked solution. A converter raises
RecordError naming the field; `xtune.data.preference` checks the prompt and adds file and record.
"""

from __future__ import annotations

import json
import re
from typing import Any

from xtune.data.conversation import RecordError, message, require_text
from xtune.data.formats import _get, _optional_text, openai

# The keyword arguments a reward function is called with besides the record's columns: a column of the
# same name would collide with them (the reward calling convention, xtune.objectives.reward_functions).
RESERVED_COLUMNS = ("prompts", "completions", "completion_ids", "max_completion_length", "prompt_messages")

# A number as GSM8K solutions write them: 72, -7, 0.25, 1,200 (thousands separators, removed).
_NUMBER = re.compile(r"(?<![\d.,])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def _prompt_item(text: str, columns: dict, system: str = "") -> dict:
    turns = [message("user", text, loss=False)]
    if system:
        turns.insert(0, message("system", system, loss=False))
    return {"prompt": turns, "columns": columns}


def gsm8k(record: dict, *, question: str | None = "question", answer: str | None = "answer",
          system: str | None = "system", **_: Any) -> dict:
    """The hub's openai/gsm8k: `question`, and `answer` (the worked solution ending in ``#### 72``): the
    prompt is the question, column `answer` the text after ``####`` (commas removed)."""
    a_field = answer or "answer"
    solution = require_text(_get(record, answer), a_field)
    if "####" not in solution:
        raise RecordError("has no '#### <answer>' line (openai/gsm8k's final answer)", a_field)
    final = solution.rsplit("####", 1)[1].strip().replace(",", "")
    if not final:
        raise RecordError("is empty after '####'", a_field)
    return _prompt_item(require_text(_get(record, question), question or "question"), {"answer": final},
                        _optional_text(record, system))


def last_number(text: str) -> str | None:
    """The last number of a worked solution (``... = $1,200.`` -> ``1200``), None when there is none."""
    numbers = _NUMBER.findall(text)
    return numbers[-1].replace(",", "") if numbers else None


def gsm8k_alpaca(record: dict, *, instruction: str | None = "instruction", input: str | None = "input",
                 output: str | None = "output", system: str | None = "system", **_: Any) -> dict:
    """GSM8K as alpaca (AlpacaDataCleaned's gsm_8k_train): instruction (+ input) is the prompt; `output` is
    the worked solution with no answer marker, so column `answer` is its last number."""
    o_field = output or "output"
    final = last_number(require_text(_get(record, output), o_field))
    if final is None:
        raise RecordError("has no number to take as the answer (the solution's last number is)", o_field)
    prompt = require_text(_get(record, instruction), instruction or "instruction")
    extra = _optional_text(record, input)
    return _prompt_item(f"{prompt}\n{extra}" if extra.strip() else prompt, {"answer": final},
                        _optional_text(record, system))


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; None when none
    closes."""
    starts = [m.end() for m in _BOXED.finditer(text)]
    for start in reversed(starts):
        depth = 1
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i].strip()
    return None


def math_problem(record: dict, *, problem: str | None = "problem", solution: str | None = "solution",
                 answer: str | None = "answer", system: str | None = "system", **_: Any) -> dict:
    """MATH-style `problem` / `solution`: column `answer` is the content of the solution's last
    ``\\boxed{}``, or the record's own `answer` column where it has one (MATH-500)."""
    given = _get(record, answer)
    if given is not None:
        numeric = isinstance(given, (int, float)) and not isinstance(given, bool)
        final = str(given) if numeric else require_text(given, answer)
    else:
        s_field = solution or "solution"
        final = last_boxed(require_text(_get(record, solution), s_field))
        if not final:
            raise RecordError("has no \\boxed{...} answer (and the record no answer column)", s_field)
    return _prompt_item(require_text(_get(record, problem), problem or "problem"), {"answer": final},
                        _optional_text(record, system))


def prompt(record: dict, *, prompt: str | None = "prompt", system: str | None = "system", **_: Any) -> dict:
    """A generic prompt record: `prompt` as text or messages (ending on a user turn), `system` optional, and
    every other column carried as is for the reward functions (TRL's prompt-only layout)."""
    p_field = prompt or "prompt"
    value = _get(record, prompt)
    if value is None:
        raise RecordError(f"is missing (a prompt record has {p_field} plus the columns its rewards read)",
                          p_field)
    if isinstance(value, list) and value:
        turns = [{**m, "loss": False} for m in openai({p_field: value}, messages=p_field)]
    elif isinstance(value, str):
        turns = [message("user", require_text(value, p_field), loss=False)]
    else:
        raise RecordError("must be a string or a non-empty list of messages", p_field)
    sys_text = _optional_text(record, system)
    if sys_text and turns[0]["role"] != "system":
        turns.insert(0, message("system", sys_text, loss=False))
    columns = {k: v for k, v in record.items() if k not in (prompt, system)}
    return {"prompt": turns, "columns": columns}


def checked_columns(item, required: tuple[str, ...] | list[str] = ()) -> dict:
    """A converted item's columns, checked: JSON data (they travel as JSON in the training rows), no name the
    reward functions are already called with, and every `required` column (what the recipe's reward
    functions read) present. Items without columns (conversations, pairs used as prompts) have none."""
    columns = item.get("columns", {}) if isinstance(item, dict) else {}
    if not isinstance(columns, dict):
        raise RecordError(f"the converter's columns must be a dict, got {type(columns).__name__}")
    for name, value in columns.items():
        if name in RESERVED_COLUMNS:
            raise RecordError("is a name the reward functions are called with already (rename the column)",
                              name)
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise RecordError(f"must be JSON data for the reward functions, got {type(value).__name__}",
                              name) from None
    missing = [name for name in required if columns.get(name) is None]
    if missing:
        raise RecordError(f"is missing (the reward functions read {', '.join(map(repr, required))})",
                          missing[0])
    return columns
