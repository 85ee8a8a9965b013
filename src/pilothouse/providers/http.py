"""A lean asyncio HTTP/1.1 client for upstream model APIs.

One :class:`HTTPClient` per upstream (one origin: scheme, host, port, plus a base path). It keeps a
bounded pool of keep-alive connections (idle ones reused last-in first-out; callers queue when all
are busy), parses responses with ``httptools`` on an :class:`asyncio.Protocol` (so it runs on the
default loop and on uvloop alike) and speaks TLS through :mod:`ssl` for ``https`` upstreams.

``await client.request(method, path, body)`` reads a whole response; ``async with
client.stream(method, path, body) as response`` gives the status and headers first, then
``response.aiter_lines()`` (server-sent events) or ``response.aiter_bytes()``. Leaving the ``async
with`` before the body ended (an error, or the consumer closing its generator) closes the connection,
so the upstream sees the disconnect.

Timeouts: ``connect_timeout`` bounds opening a connection (TLS handshake included); ``read_timeout``
bounds the wait for the response head and each wait for more of the body. Failures raise
:class:`HTTPError` subclasses: :class:`ConnectTimeout` and :class:`ReadTimeout` (both
:class:`HTTPTimeout`), :class:`ConnectError` and :class:`RemoteProtocolError`.

A request sent on a reused keep-alive connection that fails before any byte of the response arrived
(the server had closed the idle connection meanwhile) is retried once on a new connection.

Not supported (upstream model APIs need none of it): HEAD requests (the parser would expect a body),
``Expect: 100-continue``, redirects, proxies, compression (no ``Accept-Encoding`` is sent, so bodies
come uncompressed) and request bodies streamed from an iterator.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httptools

from pilothouse.domain.redaction import redact_url

__all__ = [
    "ConnectError",
    "ConnectTimeout",
    "HTTPClient",
    "HTTPError",
    "HTTPTimeout",
    "Headers",
    "ReadTimeout",
    "RemoteProtocolError",
    "Response",
    "StreamResponse",
]

_PAUSE_AT = 256 * 1024  # buffered, unread body bytes at which a stream stops reading the socket
_DRAIN_GRACE_S = 1.0  # how long a stream left cleanly waits for the end of its body to keep the connection
_NO_BODY_STATUSES = frozenset((204, 304))


class HTTPError(Exception):
    """Any failure of an upstream HTTP exchange."""


class HTTPTimeout(HTTPError):
    """A connect or read timeout."""


class ConnectTimeout(HTTPTimeout):
    """No connection (TCP and TLS) within the connect timeout."""


class ReadTimeout(HTTPTimeout):
    """No response head, or no more of the body, within the read timeout."""


class ConnectError(HTTPError):
    """The connection could not be opened (refused, unresolvable name, TLS failure)."""


class RemoteProtocolError(HTTPError):
    """The server broke the exchange: closed the connection early or sent malformed HTTP."""


class _StaleConnection(RemoteProtocolError):
    """A reused connection failed before any response byte arrived (retried once on a new one)."""


class Headers(Mapping[str, str]):
    """Response headers: case-insensitive lookup; repeated headers are joined with ``", "``."""

    __slots__ = ("_map", "raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw
        values: dict[str, str] = {}
        for name, value in raw:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            values[key] = f"{values[key]}, {text}" if key in values else text
        self._map = values

    def __getitem__(self, name: str) -> str:
        return self._map[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map

    def get(self, name: str, default: Any = None) -> Any:
        return self._map.get(name.lower(), default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def __repr__(self) -> str:
        return f"Headers({self._map!r})"


class Response:
    """A whole response: ``status``, ``headers`` and ``content`` (the body bytes)."""

    __slots__ = ("_headers", "_raw_headers", "content", "status")

    def __init__(self, status: int, raw_headers: list[tuple[bytes, bytes]], content: bytes) -> None:
        self.status = status
        self._raw_headers = raw_headers
        self._headers: Headers | None = None
        self.content = content

    @property
    def headers(self) -> Headers:
        if self._headers is None:
            self._headers = Headers(self._raw_headers)
        return self._headers

    def __repr__(self) -> str:
        return f"<Response {self.status} ({len(self.content)} bytes)>"


# -- connections ------------------------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 connection: sends a request, parses its response (one exchange at a time)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, pool: _Pool) -> None:
        self.loop = loop
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False  # the transport is gone or going: never reuse
        self.idle = False  # parked in the pool
        self.reusable = False  # the last response ended cleanly and the server allows keep-alive
        self.used = False  # has carried an exchange before the current one
        # the exchange in progress
        self.active = False
        self.stream = False  # wake the waiter on the head (stream) or only at the end (whole body)
        self.received = False  # any response byte has arrived
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.buffered = 0
        self.head_done = False
        self.complete = False
        self.framed = False  # Content-Length or chunked: the end is in the data, not at the close
        self.error: HTTPError | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.last_data = 0.0
        self.timer: asyncio.TimerHandle | None = None
        self.paused = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.active or self.complete:  # bytes nobody asked for: the connection is unusable
            self.reusable = False
            self.close()
            return
        self.received = True
        self.last_data = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.reusable = False
            if not self.complete:  # else: junk after a whole response, which stands
                self._fail(RemoteProtocolError(f"malformed HTTP response: {exc}"))
            self.close()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if self.idle:
            self.pool.drop_idle(self)
        if not self.active or self.complete:
            return
        if self.head_done and not self.framed and exc is None:
            self.complete = True  # a close-delimited body ends with the connection
            self._wake()
            return
        if not self.received:
            reason = f": {exc}" if exc else ""
            self._fail(_StaleConnection(f"server closed the connection without a response{reason}"))
        else:
            reason = f" ({exc})" if exc else ""
            self._fail(RemoteProtocolError(f"server closed the connection mid-response{reason}"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self.complete:
            raise RemoteProtocolError("data after the response")
        self.headers = []
        self.framed = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))
        if len(name) in (14, 17):
            lowered = name.lower()
            if lowered == b"content-length" or lowered == b"transfer-encoding":
                self.framed = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:
            return  # an interim response (100 Continue, 103 Early Hints): the real one follows
        self.status = status
        self.head_done = True
        if status in _NO_BODY_STATUSES:
            self.framed = True
        if self.stream:
            self._wake()

    def on_body(self, body: bytes) -> None:
        if not self.head_done:
            return
        self.chunks.append(body)
        self.buffered += len(body)
        if self.stream:
            if self.buffered >= _PAUSE_AT and not self.paused and self.transport is not None:
                self.paused = True
                self.transport.pause_reading()
            self._wake()

    def on_message_complete(self) -> None:
        if not self.head_done:
            return  # the end of an interim response
        self.complete = True
        self.reusable = self.parser.should_keep_alive()
        self._wake()

    # the exchange

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: HTTPError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _on_timeout(self, waiter: asyncio.Future[None], timeout: float) -> None:
        if waiter.done():
            return
        remaining = self.last_data + timeout - self.loop.time()
        if remaining > 0:  # data arrived since the wait began: the timeout counts from then
            self.timer = self.loop.call_later(remaining, self._on_timeout, waiter, timeout)
            return
        self.error = ReadTimeout(f"no data from the upstream for {timeout:g} s")
        waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        """Until the next event (head, body data, end, error), at most ``timeout`` without data."""
        waiter = self.loop.create_future()
        self.waiter = waiter
        self.last_data = self.loop.time()
        self.timer = self.loop.call_later(timeout, self._on_timeout, waiter, timeout)
        try:
            await waiter
        finally:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.waiter = None

    def begin(self, data: bytes, stream: bool) -> None:
        """Start an exchange: reset the response state and send the request bytes."""
        self.active = True
        self.stream = stream
        self.received = False
        self.status = 0
        self.headers = []
        self.chunks = []
        self.buffered = 0
        self.head_done = False
        self.complete = False
        self.framed = False
        self.error = None
        self.reusable = False
        transport = self.transport
        if transport is None or transport.is_closing():
            self.closed = True
            raise _StaleConnection("the connection closed while idle")
        transport.write(data)

    def take_body(self) -> bytes:
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return body

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


# -- pool -------------------------------------------------------------------------------------------


_default_ssl_context: ssl.SSLContext | None = None


def _ssl_context() -> ssl.SSLContext:
    global _default_ssl_context
    if _default_ssl_context is None:
        _default_ssl_context = ssl.create_default_context()
    return _default_ssl_context


class _Pool:
    """The connections to one origin: at most ``max_connections`` open, idle ones reused LIFO."""

    def __init__(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext | None,
        connect_timeout: float,
        max_connections: int,
        max_idle: int,
    ) -> None:
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.idle: list[_Connection] = []
        self.open = 0  # idle, in use and being opened
        self.waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()
        self.closed = False

    async def acquire(self, fresh: bool = False) -> _Connection:
        """An idle connection (unless ``fresh``) or a new one; waits while ``max_connections`` are busy."""
        while True:
            if self.closed:
                raise ConnectError("the HTTP client is closed")
            if not fresh:
                idle = self.idle
                while idle:
                    conn = idle.pop()
                    conn.idle = False
                    if not conn.closed:
                        return conn
                    self.open -= 1
            if self.open < self.max_connections:
                self.open += 1
                try:
                    return await self._connect()
                except BaseException:
                    self.open -= 1
                    self._notify()
                    raise
            if fresh and self.idle:  # make room for the new connection
                oldest = self.idle.pop(0)
                oldest.idle = False
                oldest.close()
                self.open -= 1
                continue
            waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                conn_or_none = await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():  # handed something just as we were cancelled
                    handed = waiter.result()
                    if handed is not None:
                        self.release(handed)
                    else:
                        self._notify()
                else:
                    with contextlib.suppress(ValueError):
                        self.waiters.remove(waiter)
                raise
            if conn_or_none is not None:
                if fresh:
                    conn_or_none.close()
                    self.open -= 1
                    continue
                return conn_or_none

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        conn = _Connection(loop, self)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(
                    lambda: conn,
                    self.host,
                    self.port,
                    ssl=self.ssl_context,
                    server_hostname=self.host if self.ssl_context is not None else None,
                )
        except TimeoutError as exc:
            raise ConnectTimeout(
                f"no connection to {self.host}:{self.port} within {self.connect_timeout:g} s"
            ) from exc
        except OSError as exc:  # refused, unreachable, DNS (gaierror), TLS (SSLError)
            raise ConnectError(f"cannot connect to {self.host}:{self.port}: {exc}") from exc
        return conn

    def _notify(self) -> None:
        """A slot freed up: let the first live waiter try again."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def release(self, conn: _Connection) -> None:
        """Give back a connection after an exchange; kept only if it can carry another."""
        conn.active = False
        conn.used = True
        if conn.closed or not conn.reusable or self.closed:
            self.discard(conn)
            return
        while self.waiters:  # hand it straight to a queued caller
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if len(self.idle) >= self.max_idle:
            self.discard(conn)
            return
        conn.idle = True
        self.idle.append(conn)

    def discard(self, conn: _Connection) -> None:
        """Close a connection that was handed out and free its slot."""
        conn.active = False
        conn.close()
        self.open -= 1
        self._notify()

    def drop_idle(self, conn: _Connection) -> None:
        """An idle connection was closed by the server."""
        conn.idle = False
        try:
            self.idle.remove(conn)
        except ValueError:
            return
        self.open -= 1
        self._notify()

    def close(self) -> None:
        self.closed = True
        idle, self.idle = self.idle, []
        for conn in idle:
            conn.idle = False
            conn.close()
            self.open -= 1
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)


# -- client -----------------------------------------------------------------------------------------


class StreamResponse:
    """A response whose body is read as it arrives; use within ``async with client.stream(...)``."""

    def __init__(self, client: HTTPClient, conn: _Connection) -> None:
        self._client = client
        self._conn: _Connection | None = conn
        self.status = conn.status
        self.headers = Headers(conn.headers)

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body, in chunks as they arrive (chunked framing removed)."""
        conn = self._conn
        if conn is None:
            return
        timeout = self._client.read_timeout
        while True:
            if conn.chunks:
                yield conn.take_body()
            elif conn.error is not None:
                raise conn.error
            elif conn.complete:
                return
            else:
                await conn.wait(timeout)

    async def aiter_lines(self) -> AsyncIterator[str]:
        """The body as text lines (``\\n``, ``\\r\\n`` or ``\\r`` ends a line), without line endings."""
        pending = b""
        async for chunk in self.aiter_bytes():
            data = pending + chunk if pending else chunk
            if b"\r" in data:
                data = data.replace(b"\r\n", b"\n")
                if data.endswith(b"\r"):  # perhaps the first half of a \r\n: hold it back
                    lines = data[:-1].replace(b"\r", b"\n").split(b"\n")
                    pending = lines.pop() + b"\r"
                else:
                    lines = data.replace(b"\r", b"\n").split(b"\n")
                    pending = lines.pop()
            else:
                lines = data.split(b"\n")
                pending = lines.pop()
            for line in lines:
                yield line.decode("utf-8", "replace")
        if pending.endswith(b"\r"):
            pending = pending[:-1]
            yield pending.decode("utf-8", "replace")
        elif pending:
            yield pending.decode("utf-8", "replace")

    async def aread(self) -> bytes:
        """The rest of the body."""
        parts = [chunk async for chunk in self.aiter_bytes()]
        return b"".join(parts)

    async def aclose(self, clean: bool = False) -> None:
        """Done with the response: its connection goes back to the pool when the body was read to the
        end (or, when ``clean``, ends within a short grace), else it is closed."""
        conn, self._conn = self._conn, None
        if conn is None:
            return
        pool = self._client._pool
        if not conn.complete and clean and conn.error is None and not conn.closed:
            try:
                async with asyncio.timeout(_DRAIN_GRACE_S):
                    while not conn.complete and conn.error is None:
                        conn.take_body()
                        await conn.wait(_DRAIN_GRACE_S)
            except TimeoutError:
                pass  # the body did not end soon: the connection is closed below, nothing lost
            except BaseException:
                pool.discard(conn)
                raise
        if conn.complete and conn.error is None:
            pool.release(conn)
        else:
            pool.discard(conn)

    async def __aenter__(self) -> StreamResponse:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose(clean=exc_type is None)


class _StreamContext:
    def __init__(
        self, client: HTTPClient, method: str, path: str, body: bytes, headers: Mapping[str, str] | None
    ) -> None:
        self._args = (client, method, path, body, headers)
        self._response: StreamResponse | None = None

    async def __aenter__(self) -> StreamResponse:
        client, method, path, body, headers = self._args
        conn = await client._exchange(method, path, body, headers, stream=True)
        self._response = StreamResponse(client, conn)
        return self._response

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._response is not None:
            await self._response.__aexit__(exc_type, exc, tb)


class HTTPClient:
    """Pooled HTTP/1.1 to one upstream. ``base_url`` is ``http(s)://host[:port][/prefix]``; request
    paths are appended to the prefix. ``headers`` go with every request."""

    def __init__(
        self,
        base_url: str,
        *,
        headers: Mapping[str, str] | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_connections: int = 256,
        max_idle: int = 64,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {redact_url(base_url)!r}")
        tls = parts.scheme == "https"
        default_port = 443 if tls else 80
        port = parts.port or default_port
        host = parts.hostname
        self.base_url = base_url
        self.prefix = parts.path.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        host_header = f"[{host}]" if ":" in host else host
        if port != default_port:
            host_header = f"{host_header}:{port}"
        static = {"host": host_header, "accept": "*/*", "user-agent": "pilothouse"}
        for name, value in (headers or {}).items():
            static[name.lower()] = value
        self._static_headers = dict(static)
        self._head_tail = "".join(f"{_title(k)}: {v}\r\n" for k, v in static.items()).encode("latin-1")
        self._pool = _Pool(
            host,
            port,
            (ssl_context or _ssl_context()) if tls else None,
            connect_timeout,
            max_connections,
            max_idle,
        )

    def _request_bytes(self, method: str, path: str, body: bytes, headers: Mapping[str, str] | None) -> bytes:
        head_tail = self._head_tail
        if headers:
            static = self._static_headers
            names = {name.lower() for name in headers}
            if len(names) < len(headers) or not names.isdisjoint(static):  # a header replaces another
                merged = dict(static)
                for name, value in headers.items():
                    merged[name.lower()] = value
                head_tail = "".join(f"{_title(k)}: {v}\r\n" for k, v in merged.items()).encode("latin-1")
            else:  # only new headers (a traceparent per call): after the fixed ones, as a merge puts them
                extra = "".join(f"{_title(k)}: {v}\r\n" for k, v in headers.items()).encode("latin-1")
                head_tail += extra
        start = f"{method} {self.prefix}{path} HTTP/1.1\r\n".encode("latin-1")
        return b"%s%sContent-Length: %d\r\n\r\n%s" % (start, head_tail, len(body), body)

    async def _exchange(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str] | None, stream: bool
    ) -> _Connection:
        """Send a request; returns the connection once the head (``stream``) or the whole response
        arrived. The caller then owns the connection (release or discard it)."""
        data = self._request_bytes(method, path, body, headers)
        pool = self._pool
        timeout = self.read_timeout
        fresh = False
        while True:
            conn = await pool.acquire(fresh)
            try:
                conn.begin(data, stream)
                while conn.error is None and not (conn.head_done if stream else conn.complete):
                    await conn.wait(timeout)
                if conn.error is not None:
                    raise conn.error
            except _StaleConnection as exc:
                retry = conn.used and not fresh
                pool.discard(conn)
                if retry:
                    fresh = True
                    continue
                raise RemoteProtocolError(str(exc)) from None
            except BaseException:
                pool.discard(conn)
                raise
            return conn

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Response:
        """Send a request and read the whole response."""
        conn = await self._exchange(method, path, body, headers, stream=False)
        response = Response(conn.status, conn.headers, conn.take_body())
        self._pool.release(conn)
        return response

    def stream(
        self, method: str, path: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> _StreamContext:
        """``async with client.stream(...) as response``: the head first, the body as it arrives."""
        return _StreamContext(self, method, path, body, headers)

    async def aclose(self) -> None:
        """Close idle connections; connections in use close when their exchange ends."""
        self._pool.close()


def _title(name: str) -> str:
    return "-".join(part.capitalize() for part in name.split("-"))
