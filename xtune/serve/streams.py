"""Answers streamed as server-sent events, in OpenAI's chunk format.

A chat stream opens with the assistant's role (at once, so the client knows the answer has started), then
one chunk per piece of text, a last chunk with the finish reason, the usage when `stream_options` asks
for it, and `data: [DONE]`. A failure after the stream has begun is an error event before `[DONE]`.
If the client goes away, the job is cancelled and its row in the batch stops.
"""

from __future__ import annotations

import json

from xtune.serve.errors import ApiError
from xtune.serve.jobs import usage
from xtune.serve.worker import Job


def _sse(data) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _stream(answer, job: Job, chunk, include_usage: bool, prompt_tokens: int, usage_chunk):
    """Server-sent events: `chunk(text, finish_reason)` for each piece and the end, the usage chunk when
    asked for, an error event if generation fails, then `[DONE]`. The job is cancelled if the client
    goes away."""
    try:
        async for event in answer.events():
            if event[0] == "text":
                yield _sse(chunk(event[1], None))
            elif event[0] == "error":
                yield _sse(ApiError(500, event[1], type="server_error", code="generation_failed").body())
            else:
                yield _sse(chunk(None, event[1]))
                if include_usage:
                    yield _sse(usage_chunk(usage(prompt_tokens, event[2])))
        yield "data: [DONE]\n\n"
    finally:
        job.cancelled.set()


def chat_events(head: dict, req, job: Job, answer, prompt_tokens: int):
    """A chat answer's events: the role first, then its text, the finish reason and the usage if asked."""
    head = {**head, "object": "chat.completion.chunk"}
    first = [True]

    def chunk(text, reason):
        delta = {} if text is None else {"content": text}
        if first[0]:
            delta, first[0] = {"role": "assistant", "content": text or ""}, False
        out = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": reason, "logprobs": None}]}
        return {**out, "usage": None} if req.include_usage else out

    async def events():
        yield _sse(chunk(None, None))  # the role, at once: the client knows the answer has started
        async for event in _stream(answer, job, chunk, req.include_usage, prompt_tokens,
                                   lambda usage: {**head, "choices": [], "usage": usage}):
            yield event

    return events()


def completion_events(head: dict, req, job: Job, answer, prompt_tokens: int):
    """A completion's events: its text piece by piece, the finish reason, the usage if asked."""
    head = {**head, "object": "text_completion"}

    def chunk(text, reason):
        out = {**head, "choices": [{"index": 0, "text": text or "", "finish_reason": reason,
                                    "logprobs": None}]}
        return {**out, "usage": None} if req.include_usage else out

    return _stream(answer, job, chunk, req.include_usage, prompt_tokens,
                   lambda usage: {**head, "choices": [], "usage": usage})
