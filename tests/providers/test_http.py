"""The upstream HTTP client (``pilothouse.providers.http``) against real servers on loopback: the
simulated upstream and tiny asyncio servers that misbehave on purpose."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import orjson
import pytest

from pilothouse.providers.base import Deployment, ProviderError
from pilothouse.providers.http import (
    ConnectError,
    ConnectTimeout,
    HTTPClient,
    ReadTimeout,
    RemoteProtocolError,
    Response,
)
from pilothouse.providers.openai import OpenAIProvider
from pilothouse.testing import SimConfig, SimulatedUpstream, free_port

MESSAGES = [{"role": "user", "content": "hello there"}]
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


@pytest.fixture(scope="module")
def upstream() -> Iterator[SimulatedUpstream]:
    with SimulatedUpstream() as up:
        yield up


@pytest.fixture(scope="module")
def slow_upstream() -> Iterator[SimulatedUpstream]:
    with SimulatedUpstream(SimConfig(tokens_per_s=20, output_tokens=400)) as up:
        yield up


class TinyServer:
    """An asyncio server on loopback that runs ``handler(reader, writer, connection_number)`` for each
    connection and counts connections."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.server: asyncio.Server | None = None
        self.port = 0
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> TinyServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self.handler(reader, writer, self.connections)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            self.tasks.discard(task)
            writer.close()


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, dict[str, str], bytes]:
    """The request line, headers (lower-case names) and body of the next request."""
    head = await reader.readuntil(b"\r\n\r\n")
    line, *rest = head[:-4].split(b"\r\n")
    headers = {}
    for item in rest:
        name, _, value = item.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return line, headers, body


def ok(body: bytes, extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s" % (
        len(body),
        extra,
        body,
    )


async def keep_answering(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
    while True:
        line, headers, body = await read_request(reader)
        writer.write(ok(b"%s %s %s" % (line, headers.get("x-n", "").encode(), body)))
        await writer.drain()


# -- whole responses ---------------------------------------------------------------------------------


async def test_pool_reuses_one_connection_for_sequential_requests() -> None:
    async with TinyServer(keep_answering) as server:
        client = HTTPClient(server.url + "/v1", headers={"X-N": "7"})
        for i in range(5):
            response = await client.request("POST", "/chat", b"body%d" % i)
            assert response.status == 200
            assert response.content == b"POST /v1/chat HTTP/1.1 7 body%d" % i
            assert response.headers["content-type"] == "text/plain"
            assert response.headers.get("CONTENT-TYPE") == "text/plain"
            assert "Content-Length" in response.headers
        assert server.connections == 1
        assert client._pool.open == 1 and len(client._pool.idle) == 1
        await client.aclose()


async def test_per_request_headers_follow_the_fixed_ones_or_replace_them() -> None:
    async def echo_head(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(ok(head))
            await writer.drain()

    def sent(response: Response) -> list[str]:
        return response.content.decode().split("\r\n")[1:-2]  # the header lines, in order

    async with TinyServer(echo_head) as server:
        client = HTTPClient(server.url, headers={"X-Fixed": "1", "Authorization": "Bearer a"})
        fixed = ["Host: " + server.url.split("//")[1], "Accept: */*", "User-Agent: pilothouse", "X-Fixed: 1"]
        added = await client.request("POST", "/x", b"", {"traceparent": "t", "X-Other": "o"})
        assert sent(added) == [
            *fixed,
            "Authorization: Bearer a",
            "Traceparent: t",
            "X-Other: o",
            "Content-Length: 0",
        ]
        replaced = await client.request("POST", "/x", b"", {"AUTHORIZATION": "Bearer b", "traceparent": "u"})
        assert sent(replaced) == [*fixed, "Authorization: Bearer b", "Traceparent: u", "Content-Length: 0"]
        twice = await client.request("POST", "/x", b"", {"X-Dup": "1", "x-dup": "2"})
        assert sent(twice) == [*fixed, "Authorization: Bearer a", "X-Dup: 2", "Content-Length: 0"]
        plain = await client.request("POST", "/x", b"")
        assert sent(plain) == [*fixed, "Authorization: Bearer a", "Content-Length: 0"]
        await client.aclose()


async def test_idle_connections_are_reused_lifo_and_the_pool_is_bounded() -> None:
    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await read_request(reader)
            await asyncio.sleep(0.05)
            writer.write(ok(b"conn %d" % n))

    async with TinyServer(slow) as server:
        client = HTTPClient(server.url, max_connections=3)
        answers = await asyncio.gather(*(client.request("GET", "/") for _ in range(10)))
        assert all(a.status == 200 for a in answers)
        assert server.connections == 3 and server.max_open == 3  # the other 7 waited for a free one
        assert client._pool.open == 3 and not client._pool.waiters
        last_idle = client._pool.idle[-1]
        # LIFO: the most recently returned connection carries the next request
        await client.request("GET", "/")
        assert client._pool.idle[-1] is last_idle
        await client.aclose()
        assert client._pool.open == 0


async def test_chunked_body_is_reassembled() -> None:
    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nRetry-After: 3\r\n\r\n")
            for part in (b"hello ", b"chunked ", b"world"):
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
                await asyncio.sleep(0.01)
            writer.write(b"0\r\n\r\n")

    async with TinyServer(chunked) as server:
        client = HTTPClient(server.url)
        for _ in range(2):
            response = await client.request("POST", "/x", b"{}")
            assert response.status == 201
            assert response.content == b"hello chunked world"
            assert response.headers.get("retry-after") == "3"
        assert server.connections == 1  # a chunked body that ended cleanly leaves the connection reusable
        await client.aclose()


async def test_connection_close_is_not_reused() -> None:
    async def closing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(ok(b"bye", b"Connection: close\r\n"))
        await writer.drain()
        await asyncio.Event().wait()  # and never closes: the exchange must end without the close

    async with TinyServer(closing) as server:
        client = HTTPClient(server.url)
        for _ in range(2):  # (the timeout is a safety net: a client waiting for the close would hang)
            assert (await asyncio.wait_for(client.request("GET", "/"), 60)).content == b"bye"
        assert server.connections == 2 and server.open == 2  # answered while the server held both open
        assert client._pool.open == 0 and not client._pool.idle
        await client.aclose()


async def test_close_delimited_body() -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ")
        await writer.drain()
        writer.write(b"it")
        await writer.drain()

    async with TinyServer(until_close) as server:
        client = HTTPClient(server.url)
        response = await client.request("GET", "/")
        assert response.content == b"all of it"
        assert client._pool.open == 0
        await client.aclose()


async def test_server_closing_an_idle_connection_is_noticed() -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(ok(b"once"))
        await writer.drain()  # then the handler returns and the server closes the idle connection

    async with TinyServer(once) as server:
        client = HTTPClient(server.url)
        assert (await client.request("GET", "/")).content == b"once"
        deadline = time.monotonic() + 60  # a safety net: the close arrives at once
        while client._pool.idle and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert not client._pool.idle and client._pool.open == 0  # dropped when the server closed it
        assert (await client.request("GET", "/")).content == b"once"
        await client.aclose()


async def test_stale_keep_alive_is_retried_once_on_a_fresh_connection() -> None:
    async def close_on_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(ok(b"first from %d" % n))
        await writer.drain()
        await read_request(reader)  # the second request on this connection: hang up without an answer
        writer.transport.abort()

    async with TinyServer(close_on_second) as server:
        client = HTTPClient(server.url)
        assert (await client.request("GET", "/")).content == b"first from 1"
        assert (await client.request("GET", "/")).content == b"first from 2"  # retried on connection 2
        assert server.connections == 2
        await client.aclose()


async def test_fresh_connection_closed_without_answer_is_an_error_not_retried() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.transport.abort()

    async with TinyServer(hang_up) as server:
        client = HTTPClient(server.url)
        with pytest.raises(RemoteProtocolError):
            await client.request("GET", "/")
        assert server.connections == 1
        assert client._pool.open == 0
        await client.aclose()


async def test_connection_closed_mid_body_is_an_error() -> None:
    async def truncate(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly a part")
        await writer.drain()

    async with TinyServer(truncate) as server:
        client = HTTPClient(server.url)
        with pytest.raises(RemoteProtocolError, match="mid-response"):
            await client.request("GET", "/")
        assert client._pool.open == 0
        await client.aclose()


async def test_malformed_response_is_an_error() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"SMTP ready\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.5)

    async with TinyServer(garbage) as server:
        client = HTTPClient(server.url)
        with pytest.raises(RemoteProtocolError, match="malformed"):
            await client.request("GET", "/")
        await client.aclose()


# -- failures and timeouts ---------------------------------------------------------------------------


async def test_connect_refused_is_a_connect_error() -> None:
    client = HTTPClient(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(ConnectError, match="cannot connect"):
        await client.request("GET", "/")
    assert client._pool.open == 0
    await client.aclose()


async def test_connect_timeout() -> None:
    # a listener whose accept queue is full: Linux drops further SYNs, so connecting hangs
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)
    try:
        client = HTTPClient(f"http://127.0.0.1:{port}", connect_timeout=0.2)
        # ConnectTimeout, not the safety net's TimeoutError: unbounded, the kernel retries for minutes
        with pytest.raises(ConnectTimeout):
            await asyncio.wait_for(client.request("GET", "/"), 60)
        assert client._pool.open == 0
    finally:
        for sock in [*fillers, listener]:
            sock.close()


async def test_read_timeout_waiting_for_the_head() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        await asyncio.Event().wait()  # never answers

    async with TinyServer(silent) as server:
        client = HTTPClient(server.url, read_timeout=0.2)
        with pytest.raises(ReadTimeout):  # (wait_for is a safety net against a hang)
            await asyncio.wait_for(client.request("GET", "/"), 60)
        assert client._pool.open == 0  # a timed-out connection is closed, not reused
        await client.aclose()


@pytest.mark.slow  # waits out the trickle and the read timeout, twice
async def test_read_timeout_counts_from_the_last_data() -> None:
    sent: list[int] = []  # bytes of body sent, per connection

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        sent.append(0)
        for _ in range(12):  # longer than the read timeout in all, never a tenth of it without data
            await asyncio.sleep(0.03)
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
            sent[-1] += 1
        await asyncio.Event().wait()  # then stall mid-body for good

    async with TinyServer(trickle) as server:
        client = HTTPClient(server.url, read_timeout=0.3)
        with pytest.raises(ReadTimeout):  # (wait_for is a safety net against a hang)
            await asyncio.wait_for(client.request("GET", "/"), 60)
        assert sent == [12]  # the timeout waited out the whole trickle, then fired on the stall
        async with client.stream("GET", "/") as response:
            received = b""
            with pytest.raises(ReadTimeout):
                async for chunk in response.aiter_bytes():
                    received += chunk
            assert received == b"x" * 12
        assert client._pool.open == 0
        await client.aclose()


# -- streams ------------------------------------------------------------------------------------------


async def test_streamed_sse_lines_from_the_simulated_upstream(upstream: SimulatedUpstream) -> None:
    client = HTTPClient(upstream.base_url + "/v1", headers={"Content-Type": "application/json"})
    body = orjson.dumps({"model": "sim", "messages": MESSAGES, "stream": True})
    for _ in range(3):
        async with client.stream("POST", "/chat/completions", body) as response:
            assert response.status == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            lines = [line async for line in response.aiter_lines()]
        data = [line for line in lines if line.startswith("data:")]
        assert data[-1] == "data: [DONE]"
        chunks = [orjson.loads(line[5:]) for line in data[:-1]]
        assert chunks[0]["object"] == "chat.completion.chunk"
    assert client._pool.open == 1  # read to the end: the connection went back to the pool each time
    # the whole-body call on the same pool
    whole = await client.request(
        "POST", "/chat/completions", orjson.dumps({"model": "sim", "messages": MESSAGES})
    )
    assert orjson.loads(whole.content)["object"] == "chat.completion"
    assert client._pool.open == 1
    await client.aclose()


async def test_lines_split_across_chunks_with_any_line_ending() -> None:
    parts = [b"data: one\r", b"\ndata: tw", b"o\n\nda", b"ta: three\r\rdata: four\r\n", b"tail"]

    async def sse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")  # close-delimited
        for part in parts:
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.01)

    async with TinyServer(sse) as server:
        client = HTTPClient(server.url)
        async with client.stream("GET", "/events") as response:
            lines = [line async for line in response.aiter_lines()]
        assert lines == ["data: one", "data: two", "", "data: three", "", "data: four", "tail"]
        assert client._pool.open == 0
        await client.aclose()


async def test_stream_error_status_body_is_readable() -> None:
    async def limited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await read_request(reader)
            body = b'{"error": {"message": "slow down"}}'
            writer.write(
                b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Length: %d\r\n\r\n%s"
                % (len(body), body)
            )

    async with TinyServer(limited) as server:
        client = HTTPClient(server.url)
        async with client.stream("POST", "/chat") as response:
            assert response.status == 429 and response.headers["Retry-After"] == "2"
            assert orjson.loads(await response.aread())["error"]["message"] == "slow down"
        assert client._pool.open == 1 and len(client._pool.idle) == 1
        await client.aclose()


async def test_closing_a_stream_early_drops_the_connection(slow_upstream: SimulatedUpstream) -> None:
    client = HTTPClient(slow_upstream.base_url + "/v1")
    body = orjson.dumps({"model": "sim", "messages": MESSAGES, "stream": True})

    async def lines() -> AsyncIterator[str]:
        async with client.stream("POST", "/chat/completions", body) as response:
            async for line in response.aiter_lines():
                if line:
                    yield line

    stream = lines()
    for _ in range(3):
        assert (await anext(stream)).startswith("data:")
    aborted = slow_upstream.streams_aborted
    await stream.aclose()  # type: ignore[attr-defined]
    assert client._pool.open == 0 and not client._pool.idle  # closed, not pooled
    deadline = time.monotonic() + 60  # a safety net: the upstream sees the close at once
    while slow_upstream.streams_aborted == aborted and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert slow_upstream.streams_aborted == aborted + 1  # the upstream saw the disconnect
    assert slow_upstream.streams_completed == 0
    await client.aclose()


async def test_stream_left_cleanly_just_before_its_end_keeps_the_connection() -> None:
    async def sse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            writer.write(b"e\r\ndata: [DONE]\n\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"0\r\n\r\n")

    async with TinyServer(sse) as server:
        client = HTTPClient(server.url)
        for _ in range(2):
            async with client.stream("POST", "/chat") as response:
                async for line in response.aiter_lines():
                    if line == "data: [DONE]":
                        break  # like the providers: stop at [DONE], before the final chunk arrived
        assert server.connections == 1
        assert client._pool.open == 1
        await client.aclose()


# -- TLS ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.mark.slow  # openssl makes the certificate
async def test_https_upstream(certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    async with TinyServer(keep_answering, ssl_context=server_context) as server:
        client_context = ssl.create_default_context(cafile=str(cert))
        client = HTTPClient(server.url, ssl_context=client_context)
        for _ in range(2):
            assert (await client.request("POST", "/tls", b"secret")).content == b"POST /tls HTTP/1.1  secret"
        assert server.connections == 1
        await client.aclose()
        # the default context verifies certificates: a self-signed one is refused
        strict = HTTPClient(server.url)
        assert strict._pool.ssl_context is not None
        assert strict._pool.ssl_context.verify_mode == ssl.CERT_REQUIRED
        with pytest.raises(ConnectError):
            await strict.request("GET", "/")
        await strict.aclose()


# -- the provider on top --------------------------------------------------------------------------------


async def test_openai_provider_maps_client_errors() -> None:
    refused = OpenAIProvider(Deployment("m", "openai", "m", base_url=f"http://127.0.0.1:{free_port()}/v1"))
    with pytest.raises(ProviderError) as info:
        await refused.chat({"messages": MESSAGES})
    assert info.value.status == 502 and info.value.retryable
    await refused.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        await asyncio.sleep(5)

    async with TinyServer(silent) as server:
        slow = OpenAIProvider(
            Deployment(
                "m", "openai", "m", base_url=server.url + "/v1", options={"first_token_timeout_s": 0.2}
            )
        )
        with pytest.raises(ProviderError) as info:
            await slow.chat({"messages": MESSAGES})
        assert info.value.status == 504 and info.value.retryable
        stream = slow.chat_stream({"messages": MESSAGES})
        with pytest.raises(ProviderError) as info:
            await anext(stream)
        assert info.value.status == 504
        await slow.close()


async def test_openai_provider_sends_its_headers(upstream: SimulatedUpstream) -> None:
    provider = OpenAIProvider(
        Deployment(
            "m", "openai", "sim", base_url=upstream.base_url + "/v1", api_key="sk-test",
            options={"headers": {"X-Custom": "yes"}},
        )
    )  # fmt: skip
    reply = await provider.chat({"messages": MESSAGES})
    assert reply["object"] == "chat.completion"
    headers = upstream.request_headers[-1]
    assert headers["authorization"] == "Bearer sk-test" and headers["x-custom"] == "yes"
    assert headers["content-type"] == "application/json"
    chunks = [chunk async for chunk in provider.chat_stream({"messages": MESSAGES})]
    assert chunks and all(c["object"] == "chat.completion.chunk" for c in chunks)
    await provider.close()


# -- uvloop ---------------------------------------------------------------------------------------------


def test_runs_on_uvloop(upstream: SimulatedUpstream) -> None:
    uvloop = pytest.importorskip("uvloop")

    async def main() -> None:
        async with TinyServer(keep_answering) as server:
            client = HTTPClient(server.url)
            answers = await asyncio.gather(*(client.request("POST", "/u", b"%d" % i) for i in range(20)))
            assert [a.content for a in answers] == [b"POST /u HTTP/1.1  %d" % i for i in range(20)]
            await client.aclose()
        client = HTTPClient(upstream.base_url + "/v1")
        body = orjson.dumps({"model": "sim", "messages": MESSAGES, "stream": True})
        async with client.stream("POST", "/chat/completions", body) as response:
            lines = [line async for line in response.aiter_lines() if line]
        assert lines[-1] == "data: [DONE]"
        await client.aclose()
        with pytest.raises(ConnectError):
            await HTTPClient(f"http://127.0.0.1:{free_port()}").request("GET", "/")

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
