"""Reading request bodies within a size limit (413 past it) and within the server's budget of body
bytes held at once across requests (429 with Retry-After past it, before the body is read)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import anyio.to_thread
import orjson
from starlette.requests import Request

from pilothouse.server.errors import ApiError

RETRY_AFTER_S = "1"
# requests that may wait in line for room in the body budget: each may hold what the server read of
# its body before it stopped reading (uvicorn's 64 KiB high-water mark and one 256 KiB socket read)
MAX_BODY_WAITING = 64
LARGE_BODY_BYTES = 1024 * 1024  # bodies from this size on are read at the budget's pace (when it has one)


class BodyBudget:
    """The bytes of request bodies the server holds in memory at once, across every request being
    read or waiting to be decoded (setting ``max_inflight_body_bytes``). A request takes its
    ``Content-Length`` before its body is read (a body sent without one takes each chunk as it
    comes) and gives it back once its body is decoded. Touched on the event loop only (no lock).

    A request that finds no room waits in line, its body unread, for up to ``wait_s`` seconds
    (setting ``body_wait_seconds``); the line holds at most ``max_waiting`` requests. Past either,
    it gets 429 with ``Retry-After`` and its connection is closed. Waiting costs the server nothing
    while the client's bytes stay in its socket (the server stops reading a connection it does not
    read from), where refusing at once made every client that retried at once (as a flood does) a
    new connection, request and answer for the event loop, hundreds a second."""

    def __init__(
        self,
        limit: int,
        wait_s: float = 0.0,
        max_waiting: int = MAX_BODY_WAITING,
        bytes_per_s: float = 0.0,
    ) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self.max_waiting = max_waiting
        self.pace = Pace(bytes_per_s) if bytes_per_s > 0 else None
        self.held = 0  # bytes taken now
        self.peak = 0  # the most taken at once since start-up
        self.refused = 0  # requests refused for want of room
        self.waited = 0  # requests that waited in line for room
        self._line: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def waiting(self) -> int:
        """Requests waiting in line for room now."""
        return len(self._line)

    def take(self, n: int) -> bool:
        """Take ``n`` bytes, or nothing and False when they do not fit (or others wait in line)."""
        if self._line or self.held + n > self.limit:
            return False
        self._take(n)
        return True

    async def take_or_wait(self, n: int) -> bool:
        """Take ``n`` bytes, waiting in line for room up to ``wait_s`` seconds; False (nothing taken)
        when they never fit, the line is full or the wait ran out."""
        if self.take(n):
            return True
        if n > self.limit or self.wait_s <= 0 or len(self._line) >= self.max_waiting:
            return False
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, granted)
        self._line.append(entry)
        self.waited += 1
        try:
            await asyncio.wait_for(asyncio.shield(granted), self.wait_s)
        except TimeoutError:
            if granted.done():  # granted as the wait ran out: the bytes are ours
                return True
            self._line.remove(entry)
            self._serve_line()  # a smaller request behind this one may fit now
            return False
        except BaseException:  # the client left (cancelled): give back what was granted meanwhile
            if granted.done():
                self.give(n)
            else:
                self._line.remove(entry)
                self._serve_line()
            raise
        return True

    def give(self, n: int) -> None:
        """Give back ``n`` bytes taken earlier; the line is served, first come first."""
        self.held -= n
        self._serve_line()

    def _take(self, n: int) -> None:
        self.held += n
        self.peak = max(self.peak, self.held)

    def _serve_line(self) -> None:
        while self._line and self.held + self._line[0][0] <= self.limit:
            n, granted = self._line.popleft()
            self._take(n)
            granted.set_result(None)


class Pace:
    """The bytes a second that large bodies are read at, together (setting
    ``large_body_bytes_per_second``): a token bucket of a tenth of a second's bytes. A reader that
    overdraws it sleeps for the deficit before its next chunk; meanwhile the server does not read
    the connection, so the client's bytes wait in its socket. It bounds what a flood of large
    uploads makes the server do each second (receive, check, decode, store), so that the one event
    loop keeps answering everything else."""

    def __init__(self, bytes_per_s: float) -> None:
        self.bytes_per_s = bytes_per_s
        self.burst = bytes_per_s / 10
        self._tokens = self.burst
        self._at: float | None = None
        self.slept_s = 0.0  # time readers spent waiting for the pace, in all

    async def spend(self, n: int) -> None:
        """Account for ``n`` bytes read; sleep while the bucket is overdrawn."""
        now = asyncio.get_running_loop().time()
        if self._at is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.bytes_per_s)
        self._at = now
        self._tokens -= n
        if self._tokens < 0:
            wait = -self._tokens / self.bytes_per_s
            self.slept_s += wait
            await asyncio.sleep(wait)


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
            raise self._busy()
        self.bytes = total

    async def reserve(self, total: int) -> None:
        """Hold ``total`` bytes (a body's ``Content-Length``) before the body is read, waiting in the
        budget's line for room; 429 when there is none in time."""
        if self.budget is None or total <= self.bytes:
            return
        if not await self.budget.take_or_wait(total - self.bytes):
            raise self._busy()
        self.bytes = total

    def _busy(self) -> ApiError:
        assert self.budget is not None
        self.budget.refused += 1
        return ApiError(
            429,
            f"The server is holding its limit of request bodies in memory ({self.budget.limit} "
            "bytes across requests); retry later.",
            code="server_busy",
            # the rest of the body is never read: the connection closes after the answer, so
            # the client stops sending bytes that the server would only receive and drop
            headers={"Retry-After": RETRY_AFTER_S, "Connection": "close"},
        )

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
            await hold.reserve(int(declared))
    pace = hold.budget.pace if hold is not None and hold.budget is not None else None
    paced = pace is not None and hold is not None and hold.bytes >= LARGE_BODY_BYTES
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        if hold is not None:
            hold.grow(size)  # a body sent without Content-Length (chunked): taken as it comes
        chunks.append(chunk)
        if pace is not None and (paced or size >= LARGE_BODY_BYTES):
            await pace.spend(len(chunk))
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
