"""``SimulatedUpstream``: a real HTTP server on loopback that speaks the OpenAI and Anthropic APIs
with the simulated model, for tests, load tests and fault drills."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import uuid
from contextvars import ContextVar
from typing import Any

import orjson

from pilothouse.providers.simulated_model import (
    SimConfig,
    SimReply,
    anthropic_message,
    count_tokens,
    is_content_chunk,
    openai_chunk_payloads,
    openai_completion,
    prompt_text,
    simulate,
)
from pilothouse.testing._server import free_port

Send = Any
Receive = Any


class SimulatedUpstream:
    """An OpenAI- and Anthropic-compatible model server on ``127.0.0.1`` (a thread of this process).

    ``with SimulatedUpstream() as up: OpenAI(base_url=up.base_url + "/v1", api_key="x")``.
    ``requests`` lists the JSON bodies received, in order, and ``request_headers`` their headers;
    ``streams_completed`` and ``streams_aborted`` count streamed answers by how they ended.
    """

    def __init__(self, config: SimConfig | None = None, port: int | None = None) -> None:
        self.config = config or SimConfig()
        self.port = port or free_port()
        self.requests: list[dict[str, Any]] = []
        self.request_headers: list[dict[str, str]] = []
        self.failing_models: set[str] = set()  # models that answer 500 while listed (fault drills)
        self.streams_completed = 0
        self.streams_aborted = 0  # streams whose client went away (or that were cut on purpose)
        self.in_flight = 0  # requests being answered now (SimConfig.max_concurrency caps it with 429s)
        self.peak_in_flight = 0
        self.rate_limited = 0  # requests answered 429 because of max_concurrency
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` (append ``/v1`` for OpenAI clients)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> SimulatedUpstream:
        """Start serving; returns when the port accepts connections."""
        import uvicorn

        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="simulated-upstream", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("simulated upstream did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> SimulatedUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- ASGI ---------------------------------------------------------------------------------------

    async def app(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        path, method = scope["path"], scope["method"]
        if method == "GET" and path == "/v1/models":
            await _json(
                send, 200, {"object": "list", "data": [{"id": "sim", "object": "model", "owned_by": "sim"}]}
            )
            return
        if method != "POST" or path not in (
            "/v1/chat/completions",
            "/v1/embeddings",
            "/v1/messages",
            "/v1/messages/count_tokens",
        ):
            await _json(send, 404, _openai_error("not found", "not_found_error"))
            return
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            await _json(send, 400, _openai_error("invalid JSON", "invalid_request_error"))
            return
        self.requests.append(request)
        self.request_headers.append(headers)
        # the upstream's own request id, as OpenAI (x-request-id) and Anthropic (request-id) send one
        name = b"request-id" if path.startswith("/v1/messages") else b"x-request-id"
        _request_id.set((name, f"req_sim_{len(self.requests)}".encode()))
        status = int(headers.get("x-sim-status", "0") or 0)
        if request.get("model") == "fail-model" or request.get("model") in self.failing_models:
            status = 500
        latency_ms = float(headers.get("x-sim-latency-ms", self.config.latency_ms))
        if status:
            await self._error(send, status, path.startswith("/v1/messages"))
            return
        limit = self.config.max_concurrency
        if limit is not None and self.in_flight >= limit:
            self.rate_limited += 1
            await self._error(send, 429, path == "/v1/messages")
            return
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await self._answer(send, receive, request, headers, path, latency_ms)
        finally:
            self.in_flight -= 1

    async def _answer(
        self,
        send: Send,
        receive: Receive,
        request: dict[str, Any],
        headers: dict[str, str],
        path: str,
        latency_ms: float,
    ) -> None:
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        if path == "/v1/messages/count_tokens":
            prompt = prompt_text(request.get("messages") or [], request.get("system"))
            await _json(send, 200, {"input_tokens": count_tokens(prompt)})
            return
        if path == "/v1/embeddings":
            await self._embeddings(send, request)
            return
        drop = headers.get("x-sim-drop-after")
        drop_after = int(drop) if drop else self.config.drop_after_tokens
        if path == "/v1/messages":
            reply = simulate(
                request.get("messages") or [],
                request.get("max_tokens"),
                self.config,
                tools=request.get("tools"),
                system=request.get("system"),
                tool_choice=request.get("tool_choice"),
                response_format=_output_format(request),
            )
            if request.get("stream"):
                await self._counted(self._anthropic_stream(send, request, reply, drop_after), receive)
            else:
                await _json(send, 200, anthropic_message(request, reply))
            return
        reply = simulate(
            request.get("messages") or [],
            request.get("max_completion_tokens") or request.get("max_tokens"),
            self.config,
            tools=request.get("tools"),
            tool_choice=request.get("tool_choice"),
            response_format=request.get("response_format"),
        )
        if request.get("stream"):
            await self._counted(self._openai_stream(send, request, reply, drop_after), receive)
        else:
            await _json(send, 200, openai_completion(request, reply))

    async def _counted(self, stream: Any, receive: Receive) -> None:
        """Run a streamed answer, stopping it when the client disconnects (as a real server would)."""
        task = asyncio.ensure_future(stream)

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            task.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            await task
        except _Dropped:
            self.streams_aborted += 1
            raise  # uvicorn then closes the connection without a final chunk
        except asyncio.CancelledError:
            self.streams_aborted += 1
            if not task.cancelled():
                raise  # this handler itself is being cancelled
            return  # the client went away
        finally:
            watcher.cancel()
        self.streams_completed += 1

    async def _error(self, send: Send, status: int, anthropic: bool) -> None:
        headers = [(b"retry-after", str(self.config.retry_after_s).encode())] if status == 429 else []
        kinds = {400: "invalid_request_error", 401: "authentication_error", 429: "rate_limit_error"}
        kind = {**kinds, 529: "overloaded_error"}.get(
            status, "server_error" if not anthropic else "api_error"
        )
        body = (
            {"type": "error", "error": {"type": kind, "message": f"simulated {status}"}}
            if anthropic
            else _openai_error(f"simulated {status}", kind)
        )
        await _json(send, status, body, headers)

    async def _embeddings(self, send: Send, request: dict[str, Any]) -> None:
        inputs = request.get("input")
        items = [inputs] if isinstance(inputs, str) else list(inputs or [])
        data = []
        for i, text in enumerate(items):
            digest = hashlib.sha256(str(text).encode()).digest()
            data.append({"object": "embedding", "index": i, "embedding": [b / 255 for b in digest[:8]]})
        tokens = sum(count_tokens(str(t)) for t in items)
        await _json(
            send,
            200,
            {
                "object": "list",
                "data": data,
                "model": request.get("model", "sim"),
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
        )

    async def _pace(self) -> None:
        if self.config.tokens_per_s > 0:
            await asyncio.sleep(1 / self.config.tokens_per_s)

    async def _openai_stream(
        self, send: Send, request: dict[str, Any], reply: SimReply, drop_after: int | None
    ) -> None:
        await _start_sse(send)
        base = {
            "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": request.get("model", "sim"),
        }
        n = int(request.get("n") or 1)

        async def chunk(payload: dict[str, Any]) -> None:
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: " + orjson.dumps({**base, **payload}) + b"\n\n",
                    "more_body": True,
                }
            )

        emitted = 0
        for payload in openai_chunk_payloads(request, reply):
            if is_content_chunk(payload):
                if drop_after is not None and emitted >= drop_after * n:
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    raise _Dropped
                if emitted % n == 0:
                    await self._pace()
                emitted += 1
            await chunk(payload)
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n", "more_body": False})

    async def _anthropic_stream(
        self, send: Send, request: dict[str, Any], reply: SimReply, drop_after: int | None
    ) -> None:
        await _start_sse(send)

        async def event(kind: str, payload: dict[str, Any]) -> None:
            data = orjson.dumps({"type": kind, **payload})
            await send(
                {
                    "type": "http.response.body",
                    "body": f"event: {kind}\ndata: ".encode() + data + b"\n\n",
                    "more_body": True,
                }
            )

        message = anthropic_message(request, reply)
        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**message["usage"], "output_tokens": 1},
        }
        await event("message_start", {"message": start})
        for index, block in enumerate(message["content"]):
            kind = block["type"]
            empty: dict[str, Any] = {**block, "input": {}} if kind == "tool_use" else {**block, kind: ""}
            if kind == "thinking":
                empty["signature"] = ""
            await event("content_block_start", {"index": index, "content_block": empty})
            if kind == "thinking":
                for delta in (
                    {"type": "thinking_delta", "thinking": block["thinking"]},
                    {"type": "signature_delta", "signature": block["signature"]},
                ):
                    await event("content_block_delta", {"index": index, "delta": delta})
            elif kind == "tool_use":
                arguments = reply.tool_call["arguments"] if reply.tool_call else "{}"
                delta = {"type": "input_json_delta", "partial_json": arguments}
                await event("content_block_delta", {"index": index, "delta": delta})
            else:
                for pos, word in enumerate(block["text"].split(" ") if block["text"] else []):
                    if drop_after is not None and pos >= drop_after:
                        await send({"type": "http.response.body", "body": b"", "more_body": False})
                        raise _Dropped
                    await self._pace()
                    text = word if pos == 0 else " " + word
                    await event(
                        "content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": text}}
                    )
            await event("content_block_stop", {"index": index})
        await event(
            "message_delta",
            {
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]},
                "usage": {"output_tokens": message["usage"]["output_tokens"]},
            },
        )
        await event("message_stop", {})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


class _Dropped(Exception):
    """Raised to cut a stream mid-way (uvicorn then closes the connection without a final chunk)."""


_request_id: ContextVar[tuple[bytes, bytes] | None] = ContextVar("sim_request_id", default=None)


def _openai_error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _output_format(request: dict[str, Any]) -> dict[str, Any] | None:
    """An Anthropic request's structured-output format (``output_config.format``) as OpenAI's."""
    config = request.get("output_config")
    fmt = config.get("format") if isinstance(config, dict) else None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return None
    return {"type": "json_schema", "json_schema": {"schema": fmt.get("schema")}}


def _id_header() -> list[tuple[bytes, bytes]]:
    value = _request_id.get()
    return [value] if value is not None else []


async def _start_sse(send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream"),
                (b"cache-control", b"no-cache"),
                *_id_header(),
            ],
        }
    )


async def _json(send: Send, status: int, body: Any, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = orjson.dumps(body)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                *(headers or []),
                *_id_header(),
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})
