"""Webhook receivers that misbehave (issue 24, attacker's pass): one that drips its answer a byte at a
time, or never answers, and one that answers with a huge body. A monitor's webhook is any project
admin's choice, and the monitors' pass sends its alerts one after another: before, a dripping
receiver held the pass (every project's monitors) for as long as it liked (httpx's timeout is per
read), and a huge answer was read whole into memory."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from pilothouse.gateway.webhooks import post_webhook

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _read_request(reader: asyncio.StreamReader) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    await reader.readexactly(length)


async def _with_receiver(handler: Handler, timeout_s: float) -> httpx.Response:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
            call = post_webhook(client, f"http://127.0.0.1:{port}/hook", b"{}", ("127.0.0.1",), timeout_s)
            return await asyncio.wait_for(call, 60)  # the test's own bound: failing, not hanging
    finally:
        server.close()


def test_a_receiver_that_drips_its_answer_is_given_up_on() -> None:
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n")
        with pytest.raises(OSError):
            while True:  # a header byte every 0.1 s: never 10 s without a read
                writer.write(b"X")
                await writer.drain()
                await asyncio.sleep(0.1)

    with pytest.raises(httpx.TimeoutException, match=r"longer than 0\.5 s"):
        asyncio.run(_with_receiver(drip, 0.5))


def test_a_huge_answer_is_not_read() -> None:
    sent = 0
    size = 1 << 30  # 1 GiB announced and streamed

    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await _read_request(reader)
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {size}\r\n\r\n".encode())
        chunk = b"x" * (1 << 20)
        try:
            while sent < size:
                writer.write(chunk)
                await writer.drain()
                sent += len(chunk)
        except OSError:
            pass

    response = asyncio.run(_with_receiver(huge, 30.0))
    assert response.status_code == 200
    assert sent < size // 8  # the sender hung up instead of reading the gigabyte
