"""Reading request bodies within a size limit (413 past it) and within the server's budget of body
bytes held at once across requests (429 with Retry-After past it, before the body is read)."""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import orjson
from starlette.requests import Request

from pilothouse.server.errors import ApiError

RETRY_AFTER_S = "1"


class BodyBudget:
    """The bytes of request bodies the server holds in memory at once, across every request being
    read or waiting to be decoded (setting ``max_inflight_body_bytes``). A request takes its
    ``Content-Length`` before its body is read (a body sent without one takes each chunk as it
    comes) and gives it back once its body is decoded; a request that finds no room gets 429 with
    ``Retry-After`` and its body is never read. Touched on the event loop only (no lock)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0  # bytes taken now
        self.peak = 0  # the most taken at once since start-up
        self.refused = 0  # requests refused for want of room

    def take(self, n: int) -> bool:
        """Take ``n`` bytes, or nothing and False when they do not fit."""
        if self.held + n > self.limit:
            return False
        self.held += n
        self.peak = max(self.peak, self.held)
        return True

    def give(self, n: int) -> None:
        """Give back ``n`` bytes taken earlier."""
        self.held -= n


class BodyHold:
    """What one request took of a :class:`BodyBudget`; :meth:`release` gives it all back (once)."""

    def __init__(self, budget: BodyBudget | None) -> None:
        self.budget = budget
        self.bytes = 0

    def grow(self, total: int) -> None:
        """Hold ``total`` bytes in all; 429 when the budget has no room for the difference."""
        if self.budget is None or total <= self.bytes:
            return
        if not self.budget.take(total - self.bytes):
            self.budget.refused += 1
            raise ApiError(
                429,
                f"The server is holding its limit of request bodies in memory ({self.budget.limit} "
                "bytes across requests); retry later.",
                code="server_busy",
                # the rest of the body is never read: the connection closes after the answer, so
                # the client stops sending bytes that the server would only receive and drop
                headers={"Retry-After": RETRY_AFTER_S, "Connection": "close"},
            )
        self.bytes = total

    def release(self) -> None:
        """Give back what this request holds."""
        if self.budget is not None and self.bytes:
            self.budget.give(self.bytes)
            self.bytes = 0


async def read_body(request: Request, limit: int, hold: BodyHold | None = None) -> bytes:
    """The raw body, refusing more than ``limit`` bytes before reading them all; with ``hold``, the
    body's bytes are taken from the budget before they are read (429 when there is no room)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        if int(declared) > limit:
            raise _too_large(limit)
        if hold is not None:
            hold.grow(int(declared))
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        if hold is not None:
            hold.grow(size)  # a body sent without Content-Length (chunked): taken as it comes
        chunks.append(chunk)
    return b"".join(chunks)


THREAD_PARSE_BYTES = 256 * 1024  # larger bodies are parsed on a worker thread (~7 ms per MiB of JSON)


async def read_json(request: Request, limit: int, budget: BodyBudget | None = None) -> Any:
    """The body parsed as JSON (a large one off the event loop, so other requests go on meanwhile);
    400 naming the line and column when it is not JSON. With ``budget``, the body's bytes are held in
    it while the body is read and parsed (429 when there is no room)."""
    hold = BodyHold(budget)
    try:
        body = await read_body(request, limit, hold)
        try:
            if len(body) > THREAD_PARSE_BYTES:
                return await anyio.to_thread.run_sync(orjson.loads, body)
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ApiError(
                400,
                f"Request body is not valid JSON (line {exc.lineno}, column {exc.colno}).",
                code="invalid_json",
            ) from None
    finally:
        hold.release()


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"Request body is larger than the {limit}-byte limit.", code="body_too_large")
