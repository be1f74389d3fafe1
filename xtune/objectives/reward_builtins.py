"""xtune's built-in reward functions for online RL (registered in `xtune.default_plugins.rewards`).

Each follows the calling convention of `xtune.objectives.reward_functions` (keyword arguments, one float or
None per completion, the rest ignored through ``**kwargs``) and carries a `check_settings` that refuses a bad
setting when the recipe is resolved rather than at the first training step. Heavy imports (math-verify and
its sympy, a reward model) happen on first use.
"""

from __future__ import annotations

import functools
import json
import re
import threading
from pathlib import Path

from xtune.errors import ConfigError

FORMAT_PATTERN = r"^<think>.*?</think>\s*<answer>.*?</answer>$"
_PROSE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")  # a word that is not a LaTeX command (\frac, \text)
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_TAG = re.compile(r"</?[A-Za-z_][\w-]*>")


def _with_check(check):
    def attach(function):
        function.check_settings = check
        return function

    return attach


# -- math_verify ---------------------------------------------------------------------------------------------
def _check_math(timeout_seconds=5, **_) -> None:
    if timeout_seconds is not None and (not isinstance(timeout_seconds, int) or timeout_seconds <= 0):
        raise ConfigError(f"reward function 'math_verify': timeout_seconds={timeout_seconds!r} must be a "
                          "positive whole number of seconds or None")


def parse_reference(reference, timeout: int | None) -> list:
    """The reference answer as math-verify parses it: the text after GSM8K's ``####`` when present; a short
    answer without ``$`` or ``\\boxed`` is read as LaTeX (bare ``3\\sqrt{2}`` would otherwise parse as 3); a
    worked solution in prose is left to math-verify, which takes its boxed or last answer. [] when nothing
    parses."""
    from math_verify import parse

    text = str(reference)
    text = (text.rpartition("####")[2] if "####" in text else text).strip()
    if not text:
        return []
    if "$" not in text and "\\boxed" not in text and not _PROSE.search(text):
        parsed = parse(f"${text}$", parsing_timeout=timeout)
        if parsed:
            return parsed
    return parse(text, parsing_timeout=timeout)


def final_answer(completion: str) -> str:
    """The part of a completion that holds its answer: the last ``<answer>...</answer>`` block when there is
    one, else the text with tags blanked out. math-verify reads neither ``<answer>72</answer>`` nor a number
    against a tag as 72, and would take a number from the reasoning instead."""
    blocks = _ANSWER_BLOCK.findall(completion)
    return blocks[-1] if blocks else _TAG.sub(" ", completion)


@_with_check(_check_math)
def math_answer(prompts, completions, answer, timeout_seconds: int | None = 5,
                **kwargs) -> list[float | None]:
    """1.0 when the completion's final answer (in its last ``<answer>`` block when it has one: its last
    ``\\boxed{}``, else its last number or expression) equals the record's `answer` as mathematics
    (``0.75`` = ``\\frac{3}{4}``), else 0.0; None where the reference itself does not parse, so a broken
    record neither rewards nor punishes. math-verify's timeouts use SIGALRM, which only the main thread may
    set: elsewhere they are off."""
    from math_verify import parse, verify

    timeout = timeout_seconds if threading.current_thread() is threading.main_thread() else None
    references: dict[str, list] = {}
    out: list[float | None] = []
    for completion, reference in zip(completions, answer, strict=True):
        if reference is None:
            out.append(None)
            continue
        key = str(reference)
        if key not in references:  # each prompt's reference repeats num_generations times
            references[key] = parse_reference(key, timeout)
        gold = references[key]
        if not gold:
            out.append(None)
            continue
        predicted = parse(final_answer(completion or ""), parsing_timeout=timeout)
        out.append(1.0 if predicted and verify(gold, predicted, timeout_seconds=timeout) else 0.0)
    return out


# -- format --------------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _compile(pattern: str) -> re.Pattern:
    if not isinstance(pattern, str) or not pattern:
        raise ConfigError(f"reward function 'format': pattern={pattern!r} must be a regular expression")
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error as exc:
        raise ConfigError(f"reward function 'format': pattern {pattern!r} is no regular expression: {exc}") \
            from None


def _check_format(pattern=FORMAT_PATTERN, **_) -> None:
    _compile(pattern)


@_with_check(_check_format)
def format_match(prompts, completions, pattern: str = FORMAT_PATTERN, **kwargs) -> list[float]:
    """1.0 when the completion, stripped of surrounding whitespace, matches `pattern` from its start (as
    TRL's format rewards use `re.match`; ``.`` crosses lines), else 0.0."""
    regex = _compile(pattern)
    return [1.0 if regex.match((completion or "").strip()) else 0.0 for completion in completions]


# -- overlong ------------------------------------------------------------------------------------------------
def _check_overlong(overlong_buffer=64, **_) -> None:
    if isinstance(overlong_buffer, bool) or not isinstance(overlong_buffer, int) or overlong_buffer <= 0:
        raise ConfigError(f"reward function 'overlong': overlong_buffer={overlong_buffer!r} must be a "
                          "positive number of tokens")


@_with_check(_check_overlong)
def overlong(prompts, completions, completion_ids, max_completion_length: int, overlong_buffer: int = 64,
             **kwargs) -> list[float]:
    """DAPO's soft overlong punishment (TRL's `get_soft_overlong_punishment`): 0 up to
    ``max_completion_length - overlong_buffer`` tokens, then linearly down to -1 at `max_completion_length`,
    and -1 beyond it."""
    if overlong_buffer > max_completion_length:
        raise ConfigError(f"reward function 'overlong': overlong_buffer={overlong_buffer} exceeds "
                          f"max_completion_length={max_completion_length}")
    start = max_completion_length - overlong_buffer
    out = []
    for ids in completion_ids:
        length = len(ids)
        out.append(0.0 if length <= start else -1.0 if length > max_completion_length
                   else (start - length) / overlong_buffer)
    return out


# -- reward_model --------------------------------------------------------------------------------------------
def _template_of(path: str, template: str, registry) -> str:
    """The chat template the reward model was trained with: the `template` setting, else the one its
    export recorded in xtune_info.json (as `xtune reward` reads it)."""
    from xtune.models.adapters import INFO_FILE
    from xtune.templates import get_template

    if not template:
        try:
            template = json.loads((Path(path).expanduser() / INFO_FILE).read_text(encoding="utf-8")) \
                .get("prompt_template") or ""
        except (OSError, ValueError, AttributeError):
            template = ""
    if not template:
        raise ConfigError(f"reward function 'reward_model': {path!r} does not say which chat template it was "
                          "trained with", hint="give dict(type='reward_model', path=..., template=NAME)")
    return get_template(template, registry).name


def _check_reward_model(path="", template="", registry=None, batch_size=8, **_) -> None:
    from xtune.models.reward import check_reward_model

    if not path:
        raise ConfigError("reward function 'reward_model' needs path=FOLDER (a reward model, e.g. the "
                          "WORK_DIR/hf of a reward recipe): dict(type='reward_model', path=...)")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ConfigError(f"reward function 'reward_model': batch_size={batch_size!r} must be a positive "
                          "number")
    check_reward_model(path)
    _template_of(path, template, registry)


@functools.lru_cache(maxsize=4)
def _loaded(path: str, precision: str):
    """(model, tokenizer), loaded once per process however many steps score with it."""
    from xtune.models.build import load_reward_model

    return load_reward_model(path, precision=precision)


@_with_check(_check_reward_model)
def reward_model(prompts, completions, prompt_messages, path: str = "", template: str = "",
                 precision: str = "float32", batch_size: int = 8, registry=None, **kwargs) -> list[float]:
    """A trained xtune reward model's score of each conversation (the prompt's messages and the completion
    as the assistant's answer), rendered with the template it was trained with."""
    from xtune.objectives.reward import score_conversations

    model, tokenizer = _loaded(str(path), precision)
    conversations = [(json.loads(messages) if isinstance(messages, str) else list(messages))
                     + [{"role": "assistant", "content": completion}]
                     for messages, completion in zip(prompt_messages, completions, strict=True)]
    return score_conversations(model, tokenizer, _template_of(path, template, registry), conversations,
                               registry=registry, batch_size=batch_size)
