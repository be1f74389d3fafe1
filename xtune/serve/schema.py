"""The requests `xtune serve` answers, read from JSON and checked field by field.

Every mistake is an `ApiError`: HTTP 400 with OpenAI's error body (`{"error": {"message", "type",
"param", "code"}}`), the message naming the field and what it accepts. Like OpenAI's API, a field the
server does not know is refused rather than silently ignored, and so is a known one whose value would
need something this server does not do (`n` > 1, penalties, log-probabilities, tools): an answer that
quietly ignored it would not be the answer asked for. `top_k` and `repetition_penalty` are accepted as
extensions (as vLLM does; the openai client sends them with `extra_body`).

Chat messages may carry images as content parts (`xtune.serve.images`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

from xtune.serve.errors import bad

ROLES = ("system", "user", "assistant")
MAX_STOP_WORDS = 4  # OpenAI's limit
# Fields OpenAI defines that change nothing about the answer here: accepted and ignored.
IGNORED = ("user", "metadata", "store", "service_tier", "parallel_tool_calls", "prompt_cache_key",
           "safety_identifier")


@dataclass(frozen=True)
class Sampling:
    """How tokens are chosen: greedy at temperature 0, else sampled. Requests batch together only when
    these are equal, and never when they have a seed (a seeded answer is generated alone, so that it is
    the same whatever else the server is doing)."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: off (OpenAI has no top-k)
    repetition_penalty: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def batch_key(self) -> tuple | None:
        """Requests with equal keys may share one `generate`; None: this one runs alone."""
        if self.seed is not None:
            return None
        if self.greedy:
            return ("greedy", self.repetition_penalty)
        return ("sample", self.temperature, self.top_p, self.top_k, self.repetition_penalty)


@dataclass
class Request:
    """A checked chat or completion request."""

    kind: str  # "chat" | "completion"
    model: str
    sampling: Sampling
    max_tokens: int | None  # None: the server's default
    stop: tuple[str, ...] = ()
    stream: bool = False
    include_usage: bool = False
    messages: list[dict] = field(default_factory=list)  # chat: role / content (text, `<image>` markers)
    images: list = field(default_factory=list)  # chat: decoded pictures (PIL), in marker order
    prompts: list[str] = field(default_factory=list)  # completion: one or more prompts


def read_json(raw: bytes) -> dict:
    """The request body as a JSON object, or a 400 saying why not."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"the request body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad(f"the request body must be a JSON object, not {type(body).__name__}", code="invalid_json")
    return body


# ------------------------------------------------------------------------------------------ fields
def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(body: dict, name: str, default: float, low: float, high: float, *,
            low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if not _is_number(value) or value < low or value > high or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise bad(f"{name} must be a number in {bracket}{low:g}, {high:g}], got {value!r}", param=name)
    return float(value)


def _integer(body: dict, name: str, low: int, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None
                                                                                 and value > high):
        limit = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise bad(f"{name} must be {limit}, got {value!r}", param=name)
    return value


def _boolean(body: dict, name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise bad(f"{name} must be true or false, got {value!r}", param=name)
    return value


def _unsupported(body: dict, name: str, allowed, why: str) -> None:
    """Refuse `name` unless it is absent or one of the `allowed` values (the ones that change nothing)."""
    if name in body and body[name] not in allowed:
        raise bad(f"{name}={body[name]!r} is not supported by xtune serve: {why}", param=name,
                  code="unsupported_parameter")


def _check_fields(body: dict, known: tuple[str, ...]) -> None:
    unknown = sorted(set(body) - set(known) - set(IGNORED))
    if unknown:
        raise bad(f"unrecognized request argument(s): {', '.join(unknown)}", param=unknown[0],
                  code="unknown_parameter")


def _model(body: dict) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("model is required: the name /v1/models lists", param="model")
    return model


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    words = [stop] if isinstance(stop, str) else stop
    if (not isinstance(words, list) or len(words) > MAX_STOP_WORDS
            or not all(isinstance(w, str) and w for w in words)):
        raise bad(f"stop must be a non-empty string or a list of at most {MAX_STOP_WORDS} of them, "
                  f"got {stop!r}", param="stop")
    return tuple(words)


def _stream_options(body: dict, stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise bad("stream_options is only allowed with stream: true", param="stream_options")
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise bad(f"stream_options accepts only include_usage, got {options!r}", param="stream_options")
    return _boolean(options, "include_usage")


def _sampling(body: dict) -> Sampling:
    return Sampling(temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
                    top_p=_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
                    top_k=_integer(body, "top_k", 0) or 0,
                    repetition_penalty=_number(body, "repetition_penalty", 1.0, 0.0, 10.0, low_open=True),
                    seed=_integer(body, "seed", -(2**63), 2**64 - 1))


def _common_unsupported(body: dict) -> None:
    _unsupported(body, "n", (None, 1), "one answer per request")
    for name in ("presence_penalty", "frequency_penalty"):
        _unsupported(body, name, (None, 0, 0.0), "use repetition_penalty")
    _unsupported(body, "logit_bias", (None, {}), "logit biases are not applied")


_SAMPLING_FIELDS = ("model", "stream", "stream_options", "temperature", "top_p", "top_k",
                    "repetition_penalty", "seed", "stop", "max_tokens", "n", "presence_penalty",
                    "frequency_penalty", "logit_bias")


# ------------------------------------------------------------------------------------------ chat
def parse_chat(body: dict) -> Request:
    _check_fields(body, (*_SAMPLING_FIELDS, "messages", "max_completion_tokens", "logprobs", "top_logprobs",
                         "tools", "tool_choice", "functions", "function_call", "response_format"))
    _common_unsupported(body)
    _unsupported(body, "logprobs", (None, False), "log-probabilities are not returned")
    _unsupported(body, "top_logprobs", (None, 0), "log-probabilities are not returned")
    for name in ("tools", "functions"):
        _unsupported(body, name, (None, []), "tool calls are not supported")
    for name in ("tool_choice", "function_call"):
        _unsupported(body, name, (None, "none"), "tool calls are not supported")
    _unsupported(body, "response_format", (None, {"type": "text"}), "only plain text answers")
    max_tokens = _integer(body, "max_completion_tokens", 1)
    max_tokens = _integer(body, "max_tokens", 1) if max_tokens is None else max_tokens
    stream = _boolean(body, "stream")
    messages, images = _messages(body.get("messages"))
    return Request(kind="chat", model=_model(body), sampling=_sampling(body), max_tokens=max_tokens,
                   stop=_stop(body), stream=stream, include_usage=_stream_options(body, stream),
                   messages=messages, images=images)


def _messages(raw) -> tuple[list[dict], list]:
    from xtune.serve.images import content_parts
    from xtune.templates.images import IMAGE_MARKER

    if not isinstance(raw, list) or not raw:
        raise bad("messages must be a non-empty list of {role, content} objects", param="messages")
    messages, images = [], []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad(f"{where} must be an object with role and content", param=where)
        role = message.get("role")
        role = "system" if role == "developer" else role  # OpenAI's newer name for the system message
        if role not in ROLES:
            raise bad(f"{where}.role must be one of {', '.join(ROLES)} (or developer), got {role!r}",
                      param=f"{where}.role")
        extra = set(message) - {"role", "content", "name"}
        if extra:
            raise bad(f"{where} has field(s) this server does not read: {', '.join(sorted(extra))}",
                      param=f"{where}.{sorted(extra)[0]}")
        content = message.get("content")
        if isinstance(content, list):
            content, pictures = content_parts(content, where)
            images += pictures
        elif not isinstance(content, str):
            raise bad(f"{where}.content must be a string or a list of content parts, got "
                      f"{type(content).__name__}", param=f"{where}.content")
        elif IMAGE_MARKER in content:
            raise bad(f"{where}.content holds {IMAGE_MARKER!r}: send images as image_url content parts",
                      param=f"{where}.content")
        messages.append({"role": role, "content": content})
    return messages, images


# ------------------------------------------------------------------------------------------ completions
def parse_completion(body: dict) -> Request:
    _check_fields(body, (*_SAMPLING_FIELDS, "prompt", "echo", "suffix", "logprobs", "best_of"))
    _common_unsupported(body)
    _unsupported(body, "echo", (None, False), "the prompt is not repeated")
    _unsupported(body, "suffix", (None, ""), "no fill-in-the-middle")
    _unsupported(body, "logprobs", (None, 0), "log-probabilities are not returned")
    _unsupported(body, "best_of", (None, 1), "one answer per request")
    prompt = body.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p for p in prompts):
        raise bad("prompt must be a non-empty string or a non-empty list of them (token ids are not read)",
                  param="prompt")
    stream = _boolean(body, "stream")
    if stream and len(prompts) > 1:
        raise bad("stream: true takes one prompt", param="prompt")
    return Request(kind="completion", model=_model(body), sampling=_sampling(body),
                   max_tokens=_integer(body, "max_tokens", 1), stop=_stop(body), stream=stream,
                   include_usage=_stream_options(body, stream), prompts=prompts)
