"""A minimal OpenAI-compatible chat completions server for benchmarks: one asyncio protocol on uvloop,
HTTP/1.1 keep-alive parsed by httptools, each answer the last user message echoed back (so an eval's
``contains`` scorer passes). It does as little as a server can, so that a benchmark measures the
client, not the mock (``pilothouse.testing.SimulatedUpstream`` runs a full ASGI app under uvicorn).

    python benchmarks/_fast_upstream.py PORT    # prints "ready" once it listens
"""

from __future__ import annotations

import asyncio
import sys
import time

import httptools
import orjson
import uvloop

_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: keep-alive\r\n"
    b"content-length: %d\r\n\r\n"
)


def completion(request: dict[str, object]) -> bytes:
    """The chat completion of one request: its last message echoed, usage counted in words."""
    messages = request.get("messages") or []
    last = messages[-1] if isinstance(messages, list) and messages else {}
    text = last.get("content") if isinstance(last, dict) else None
    text = text if isinstance(text, str) else ""
    prompt = sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))
    answer = len(text.split())
    return orjson.dumps(
        {
            "id": "chatcmpl-bench",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "sim"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": prompt, "completion_tokens": answer, "total_tokens": prompt + answer},
        }
    )


class _Server(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.close()

    def on_message_begin(self) -> None:
        self.body = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        try:
            request = orjson.loads(b"".join(self.body))
            payload = completion(request if isinstance(request, dict) else {})
        except orjson.JSONDecodeError:
            payload = b'{"error": {"message": "invalid JSON"}}'
        assert self.transport is not None
        self.transport.write(_HEAD % len(payload) + payload)


async def serve(port: int) -> None:
    """Serve on 127.0.0.1:``port`` until cancelled."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Server, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1])))
