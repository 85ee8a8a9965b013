"""Errors in OpenAI's JSON shape, used on every surface (``/v1`` and ``/api``)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse

from pilothouse.gateway import GatewayError
from pilothouse.gateway.upstream_errors import SHOULD_RETRY, retry_cannot_help
from pilothouse.server.serialise import json_default

# The web UI's last route (GET only: a styled 404 page). A request in another method that reaches no
# other route matches only its path, which Starlette answers with a 405; it names no endpoint, so it is
# a 404 (``server/app.py``), and a client with a wrong base URL is told so.
UNKNOWN_PATH_ROUTE = "/{path:path}"


class FastJSONResponse(JSONResponse):
    """JSON responses rendered by orjson (several times faster than the standard library); Money as
    JSON numbers with its exact text."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, default=json_default)


def error_response(error: GatewayError) -> FastJSONResponse:
    """An error in OpenAI's JSON shape, with its status and headers."""
    body = {"error": {"message": error.message, "type": error.kind, "param": error.param, "code": error.code}}
    return FastJSONResponse(body, status_code=error.status, headers=retry_headers(error))


def retry_headers(error: GatewayError) -> dict[str, str]:
    """The error's headers, with ``x-should-retry: false`` where a client's retry cannot help (the
    official SDKs would otherwise retry a 5xx the gateway already retried, or a refused budget)."""
    if SHOULD_RETRY not in error.headers and retry_cannot_help(error.status, error.code):
        return {**error.headers, SHOULD_RETRY: "false"}
    return error.headers


class ApiError(GatewayError):
    """An error answered to the client by a server surface (``/api``, the collector, the UI's JSON):
    status, message, an optional machine-readable code and parameter; the gateway's errors are of the
    same kind and rendered the same way."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status, message, code=code, param=param, headers=headers)

    def response(self) -> FastJSONResponse:
        """The JSON response for this error."""
        return error_response(self)


def param_error(name: str, message: str) -> ApiError:
    """The 400 of a bad query parameter, naming it."""
    return ApiError(400, f"Invalid query parameter '{name}': {message}", code="invalid_parameter", param=name)
