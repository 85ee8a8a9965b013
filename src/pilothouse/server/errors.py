"""Errors in OpenAI's JSON shape, used on every surface (``/v1`` and ``/api``)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

from pilothouse.gateway import error_kind
from pilothouse.server.serialise import json_default


class FastJSONResponse(JSONResponse):
    """JSON responses rendered by orjson (several times faster than the standard library); Money as
    JSON numbers with its exact text."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=json_default)


class ApiError(Exception):
    """An error answered to the client: status, message and an optional machine-readable code."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers or {}
        self.kind = error_kind(status)

    def response(self) -> FastJSONResponse:
        """The JSON response for this error."""
        body = {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }
        return FastJSONResponse(body, status_code=self.status, headers=self.headers)


def param_error(name: str, message: str) -> ApiError:
    """The 400 of a bad query parameter, naming it."""
    return ApiError(400, f"Invalid query parameter '{name}': {message}", code="invalid_parameter", param=name)
