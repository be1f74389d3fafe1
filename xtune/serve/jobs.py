"""From a checked request to queued jobs: the prompt rendered and tokenized, checked against the
model's context, and each job's events carried back to the request's coroutine.

A chat prompt is rendered by the `ChatSession` code `xtune chat` uses (the same text, the same stop words)
and tokenized as chat tokenizes it; a completion prompt is tokenized as text (with the tokenizer's BOS).
A prompt as long as the context, or a max_tokens that does not fit behind it, is a 400; a full queue a
503 with Retry-After, and nothing of the request stays queued.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from xtune.serve.errors import ApiError, bad
from xtune.serve.schema import Request
from xtune.serve.worker import Job, QueueFull

COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions
RETRY_AFTER_S = 1


@dataclass
class ServeState:
    """What the routes need: the served name, the backend and its worker, the key and the defaults."""

    model_name: str
    backend: object  # TransformersBackend or VllmBackend
    worker: object  # Worker
    api_key: str | None = None
    max_new_tokens: int = 512  # a chat answer's length when the request sets no max_tokens
    created: int = 0


class Answer:
    """Events of one job, carried from the worker thread to the request's coroutine."""

    def __init__(self):
        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()

    def emit(self, event: tuple) -> None:
        self.loop.call_soon_threadsafe(self.queue.put_nowait, event)

    async def events(self):
        while True:
            event = await self.queue.get()
            yield event
            if event[0] in ("done", "error"):
                return

    async def collect(self) -> tuple[str, str, int]:
        """(text, finish_reason, completion tokens) of a whole answer; a failure is a 500."""
        pieces = []
        async for event in self.events():
            if event[0] == "text":
                pieces.append(event[1])
            elif event[0] == "error":
                raise ApiError(500, event[1], type="server_error", code="generation_failed")
            else:
                return "".join(pieces), event[1], event[2]
        raise AssertionError("unreachable")


def unknown_model(state: ServeState, name: str) -> ApiError:
    return bad(f"model {name!r} is not served here: this server serves {state.model_name!r} (see /v1/models)",
               param="model", code="model_not_found")


def check_model(state: ServeState, req: Request) -> None:
    if req.model != state.model_name:
        raise unknown_model(state, req.model)


def usage(prompt: int, completion: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def prepare(state: ServeState, req: Request) -> list[tuple[list[int], dict | None]]:
    """(prompt ids, vision inputs or None) for each prompt of the request (runs in a worker thread: the
    template and the tokenizer take a moment on long conversations, the processor on pictures)."""
    from xtune.errors import XtuneError

    backend = state.backend
    if req.kind == "completion":
        return [(backend.encode(p, special=True), None) for p in req.prompts]
    if req.images and not backend.vision:
        raise bad(f"{state.model_name!r} is a text model: it cannot see images (image_url parts)",
                  param="messages")
    try:
        prompt = backend.session.render(req.messages)
    except XtuneError as exc:  # the template refuses the conversation (a system role it lacks, ...)
        raise bad(f"the chat template cannot render these messages: {exc}", param="messages") from None
    except Exception as exc:  # a hub model's own jinja raising (jinja2's TemplateError, ...)
        raise bad(f"the chat template cannot render these messages: {type(exc).__name__}: {exc}",
                  param="messages") from None
    if req.images or backend.vision:
        inputs = backend.vision_inputs(prompt, req.images)
        return [(inputs["input_ids"][0].tolist(), inputs)]
    return [(backend.encode(prompt, special=False), None)]


def max_tokens(state: ServeState, req: Request, prompt_tokens: int) -> int:
    """The request's max_tokens, or the default, checked against the model's context."""
    context = state.backend.context
    where = "messages" if req.kind == "chat" else "prompt"
    if context and prompt_tokens >= context:
        raise bad(f"the prompt is {prompt_tokens} tokens, and this model's context is {context} tokens: "
                  f"shorten the {where}", param=where, code="context_length_exceeded")
    if req.max_tokens is not None:
        if context and prompt_tokens + req.max_tokens > context:
            raise bad(f"this model's context is {context} tokens, and {prompt_tokens} (prompt) + "
                      f"{req.max_tokens} (max_tokens) exceed it: lower max_tokens or shorten the {where}",
                      param="max_tokens", code="context_length_exceeded")
        return req.max_tokens
    default = state.max_new_tokens if req.kind == "chat" else COMPLETION_DEFAULT_MAX_TOKENS
    return min(default, context - prompt_tokens) if context else default


async def submit(state: ServeState, req: Request) -> tuple[list[Job], list[Answer], list[int]]:
    """Jobs for the request's prompts, queued; a full queue is a 503 and nothing stays queued."""
    from starlette.concurrency import run_in_threadpool

    with state.worker.arriving():
        prepared = await run_in_threadpool(prepare, state, req)
        return _queue(state, req, prepared)


def _queue(state: ServeState, req: Request, prepared) -> tuple[list[Job], list[Answer], list[int]]:
    lengths = [len(ids) for ids, _ in prepared]
    limits = [max_tokens(state, req, n) for n in lengths]
    stop_words = list(dict.fromkeys(
        (state.backend.session.stop_words if req.kind == "chat" else []) + list(req.stop)))
    jobs, answers = [], []
    for (ids, inputs), limit in zip(prepared, limits, strict=True):
        answer = Answer()
        job = Job(ids=ids, inputs=inputs, sampling=req.sampling, max_tokens=limit, stop_words=stop_words,
                  emit=answer.emit, strip=req.kind == "chat")
        try:
            state.worker.submit(job)
        except QueueFull:
            for queued in jobs:
                queued.cancelled.set()
            raise ApiError(503, f"the server is busy: {state.worker.max_queue} requests are waiting already; "
                                f"retry in {RETRY_AFTER_S} s", type="server_error", code="queue_full",
                           headers={"Retry-After": str(RETRY_AFTER_S)}) from None
        jobs.append(job)
        answers.append(answer)
    return jobs, answers, lengths
