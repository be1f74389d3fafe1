"""The FastAPI application of `xtune serve`: OpenAI's `/v1/models`, `/v1/chat/completions` and
`/v1/completions`, answered whole or streamed as server-sent events.

A request is read and checked (`schema`), rendered, tokenized and queued as jobs (`jobs`), and answered
whole or as a stream (`streams`) from the worker's events. Errors are OpenAI-shaped JSON: 400 for a bad
request (named field, unknown model, malformed JSON, a prompt longer than the context), 401 for a missing
or wrong API key, 503 with `Retry-After` when the queue is full, 500 when generation itself fails.
"""

from __future__ import annotations

import hmac
import time
import uuid

from fastapi import FastAPI
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from xtune.serve.errors import ApiError
from xtune.serve.jobs import ServeState, check_model, submit, unknown_model, usage
from xtune.serve.schema import Request, parse_chat, parse_completion, read_json
from xtune.serve.streams import chat_events, completion_events

MAX_BODY_BYTES = 64 * 2**20  # a request with pictures as data: URLs stays far below this


def _error_response(error: ApiError) -> JSONResponse:
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def _authorized(state: ServeState, header: str | None) -> ApiError | None:
    if state.api_key is None:
        return None
    if not header:
        return ApiError(401, "no API key: send it as 'Authorization: Bearer KEY' (this server was started "
                             "with --api-key)", code="invalid_api_key")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), state.api_key.encode()):
        return ApiError(401, "incorrect API key", code="invalid_api_key")
    return None


def create_app(state: ServeState) -> FastAPI:
    app = FastAPI(title="xtune serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state

    @app.exception_handler(ApiError)
    async def api_error(request, exc: ApiError):
        return _error_response(exc)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):  # unknown routes, wrong methods
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return _error_response(ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}",
                                        code=code))

    @app.middleware("http")
    async def check_key_and_size(request, call_next):
        if request.url.path.startswith("/v1/"):
            error = _authorized(state, request.headers.get("authorization"))
            if error is not None:
                return _error_response(error)
            length = request.headers.get("content-length", "0")
            if length.isdigit() and int(length) > MAX_BODY_BYTES:
                too_big = (f"the request body is {int(length)} bytes, more than the "
                           f"{MAX_BODY_BYTES // 2**20} MiB this server reads")
                return _error_response(ApiError(413, too_big, code="request_too_large"))
        return await call_next(request)

    _info_routes(app, state)
    _generation_routes(app, state)
    return app


def _info_routes(app: FastAPI, state: ServeState) -> None:
    def model_card() -> dict:
        return {"id": state.model_name, "object": "model", "created": state.created, "owned_by": "xtune"}

    @app.get("/health")
    async def health():  # no key needed: load balancers and the tests ask it
        worker = state.worker
        return {"status": "ok", "waiting": worker.waiting, "batches": worker.batches,
                "largest_batch": worker.largest_batch}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [model_card()]}

    @app.get("/v1/models/{name:path}")
    async def one_model(name: str):
        if name != state.model_name:
            raise unknown_model(state, name)
        return model_card()


def _generation_routes(app: FastAPI, state: ServeState) -> None:
    @app.post("/v1/chat/completions")
    async def chat(request: HttpRequest):
        return await _answer(state, parse_chat(read_json(await request.body())))

    @app.post("/v1/completions")
    async def completions(request: HttpRequest):
        return await _answer(state, parse_completion(read_json(await request.body())))


async def _answer(state: ServeState, req: Request):
    """The response to a checked request: a stream of events, or the whole answer once complete."""
    check_model(state, req)
    jobs, answers, prompt_tokens = await submit(state, req)
    chat = req.kind == "chat"
    head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "created": int(time.time()),
            "model": state.model_name, "system_fingerprint": None}
    if req.stream:
        events = chat_events if chat else completion_events
        return StreamingResponse(events(head, req, jobs[0], answers[0], prompt_tokens[0]),
                                 media_type="text/event-stream")
    try:
        results = [await answer.collect() for answer in answers]
    finally:
        for job in jobs:
            job.cancelled.set()
    if chat:
        choices = [{"index": 0, "message": {"role": "assistant", "content": results[0][0]},
                    "finish_reason": results[0][1], "logprobs": None}]
    else:
        choices = [{"index": i, "text": text, "finish_reason": reason, "logprobs": None}
                   for i, (text, reason, _) in enumerate(results)]
    counts = usage(sum(prompt_tokens), sum(n for _, _, n in results))
    return JSONResponse({**head, "object": "chat.completion" if chat else "text_completion",
                         "choices": choices, "usage": counts})
