"""The error answers of `xtune serve`: an HTTP status and OpenAI's error body.

`{"error": {"message", "type", "param", "code"}}` is what OpenAI's API returns and what its clients read
(the openai package raises `BadRequestError` etc. with the message), so every refusal has that shape.
"""

from __future__ import annotations


class ApiError(Exception):
    """An error answer: its HTTP status and OpenAI's error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None,
                 type: str = "invalid_request_error", headers: dict | None = None):  # noqa: A002
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)
