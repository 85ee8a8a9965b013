"""Reading request bodies within a size limit (413 past it)."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import orjson
from starlette.requests import Request

from pilothouse.server.errors import ApiError


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing more than ``limit`` bytes before reading them all."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


THREAD_PARSE_BYTES = 256 * 1024  # larger bodies are parsed on a worker thread (~7 ms per MiB of JSON)


async def read_json(request: Request, limit: int) -> Any:
    """The body parsed as JSON (a large one off the event loop, so other requests go on meanwhile);
    400 with the parser's reason when it is not JSON."""
    body = await read_body(request, limit)
    try:
        if len(body) > THREAD_PARSE_BYTES:
            return await anyio.to_thread.run_sync(orjson.loads, body)
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"Request body is not valid JSON: {exc}", code="invalid_json") from exc


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"Request body is larger than the {limit}-byte limit.", code="body_too_large")
