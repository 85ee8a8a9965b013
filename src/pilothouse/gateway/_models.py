"""The two adapters of the chat-model interface (:class:`pilothouse.domain.chat.ChatModel`):
:class:`InProcessModel`, a model served by a gateway in this process (routing, retries, fallbacks,
pricing; each call a span handed to the gateway's recorder), and :class:`HttpModel`, any
OpenAI-compatible endpoint over the pooled HTTP client (a Pilothouse gateway's cost and trace headers
are read when present; a ``traceparent`` header puts the call in the caller's trace)."""

from __future__ import annotations

import functools
import time
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from pilothouse.costs.catalogue import PriceCatalogue
from pilothouse.costs.pricing import Pricer
from pilothouse.domain.chat import CallContext, ChatReply, ChatStream, ModelCallError, SpanSink
from pilothouse.domain.ids import new_span_id
from pilothouse.domain.money import Money
from pilothouse.domain.redaction import redact_url
from pilothouse.domain.traces import Usage
from pilothouse.gateway.recording import CallSpan, StreamAssembler, usage_from_openai
from pilothouse.providers.http import HTTPClient, HTTPError, Response, StreamResponse

if TYPE_CHECKING:  # the in-process adapter imports the gateway when it is used: the HTTP one needs none of it
    from pilothouse.gateway._gateway import Caller, Gateway, GatewayError

__all__ = ["HttpModel", "InProcessModel", "retry_after_seconds"]


def _retryable(status: int) -> bool:
    return status in (408, 429) or status >= 500


def _usage(response: Mapping[str, Any]) -> Usage | None:
    usage = response.get("usage")
    return usage_from_openai(usage) if isinstance(usage, dict) else None


def retry_after_seconds(value: str | None) -> float | None:
    """The seconds of a ``Retry-After`` header (None when absent or a date)."""
    try:
        return float(value) if value else None
    except ValueError:
        return None


class InProcessModel:
    """A model name served by a :class:`Gateway` in this process. ``owns_gateway``: the gateway was
    made for this model alone (an eval's), so :meth:`start` points its recorder at the caller's span
    sink and :meth:`close` closes it."""

    def __init__(self, gateway: Gateway, model: str, *, description: str, owns_gateway: bool = False) -> None:
        self.gateway = gateway
        self.model = model
        self._description = description
        self._owns = owns_gateway

    def describe(self) -> str:
        return self._description

    def endpoint(self) -> str:
        # the deployments behind the name: another upstream model or server is another cache entry
        router = self.gateway.router
        served = sorted(
            d.id + (f" {d.options}" if d.options else "") for d in router.deployments.get(self.model, [])
        )
        return "in-process: " + "; ".join(served)

    async def start(self, spans: SpanSink | None = None) -> None:
        if self._owns and spans is not None:
            self.gateway.record = spans

    def _begin(self, request: dict[str, Any], context: CallContext) -> tuple[Caller, CallSpan]:
        from pilothouse.gateway._gateway import Caller

        caller = Caller(context.project_id)
        call = self.gateway.start("chat", caller, trace_id=context.trace_id, parent_id=context.parent_id)
        call.name, call.trace = context.name, context.trace
        call.extra.update(context.attributes)
        return caller, call

    async def chat(self, request: dict[str, Any], context: CallContext) -> ChatReply:
        from pilothouse.gateway._gateway import GatewayError

        caller, call = self._begin(request, context)
        started = time.perf_counter()
        try:
            reply = await self.gateway.chat(call, {**request, "model": self.model, "stream": False}, caller)
        except GatewayError as exc:
            raise _model_error(exc) from None
        latency_ms = (time.perf_counter() - started) * 1000
        if reply.after is not None:
            await reply.after()
        assert reply.response is not None
        usage = _usage(reply.response)
        cost = reply.cost.total if reply.cost is not None and usage is not None else None
        return ChatReply(reply.response, usage, cost, latency_ms, call.trace_id)

    async def stream(self, request: dict[str, Any], context: CallContext) -> ChatStream:
        from pilothouse.gateway._gateway import GatewayError

        caller, call = self._begin(request, context)
        started = time.perf_counter()
        try:
            reply = await self.gateway.chat(call, {**request, "model": self.model, "stream": True}, caller)
        except GatewayError as exc:
            raise _model_error(exc) from None
        assert reply.chunks is not None
        upstream = reply.chunks

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            assembler = StreamAssembler()
            try:
                async for chunk in upstream:
                    assembler.add(chunk)
                    yield chunk
            except GatewayError as exc:
                raise _model_error(exc) from None
            finally:
                await upstream.aclose()  # type: ignore[attr-defined]
            response = assembler.response()
            usage = _usage(response)
            cost = reply.cost.total if reply.cost is not None and usage is not None else None
            latency_ms = (time.perf_counter() - started) * 1000
            stream.reply = ChatReply(response, usage, cost, latency_ms, call.trace_id)

        stream = ChatStream(chunks())
        return stream

    async def close(self) -> None:
        if self._owns:
            await self.gateway.close()


def _model_error(exc: GatewayError) -> ModelCallError:
    retry_after = retry_after_seconds(exc.headers.get("Retry-After"))
    return ModelCallError(
        f"{exc.status}: {exc.message}",
        retryable=_retryable(exc.status),
        status=exc.status,
        retry_after_s=retry_after,
    )


@functools.lru_cache(maxsize=1)
def _packaged_pricer() -> Pricer:
    return Pricer(PriceCatalogue.packaged())


def _error_message(body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace")[:300] or "no message"
    error = data.get("error", data) if isinstance(data, dict) else data
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])
    return str(error)[:300]


def _cost_header(value: str | None) -> Money | None:
    """A Pilothouse gateway's ``x-pilothouse-cost-usd``: Money's exact text, or ``unknown``/``pending``."""
    if value is None or value in ("", "unknown", "pending"):
        return None
    try:
        return Money.from_usd(value)
    except ValueError:
        return None


class HttpModel:
    """Any OpenAI-compatible endpoint (``base_url`` ending in ``/v1`` or wherever its
    ``/chat/completions`` lives). The cost is a Pilothouse gateway's ``x-pilothouse-cost-usd`` header
    when there is one, else the price catalogue's (``provider`` helps it find the model)."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        provider: str | None = None,
        timeout_s: float = 600.0,
        max_connections: int = 256,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key = api_key
        self.headers = dict(headers or {})
        self.provider = provider
        self.timeout_s = timeout_s
        self.max_connections = max_connections
        self._client: HTTPClient | None = None

    def describe(self) -> str:
        return redact_url(self.base_url)

    def endpoint(self) -> str:
        return redact_url(self.base_url)  # shown and stored: never the password of the URL

    async def start(self, spans: SpanSink | None = None) -> None:
        if self._client is not None:
            return
        headers = {"content-type": "application/json", **self.headers}
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        try:
            self._client = HTTPClient(
                self.base_url,
                headers=headers,
                connect_timeout=min(10.0, self.timeout_s),
                read_timeout=self.timeout_s,
                max_connections=self.max_connections,
                max_idle=self.max_connections,
            )
        except ValueError as exc:
            raise ModelCallError(f"base_url: {exc}") from None

    def _body(self, request: Mapping[str, Any], stream: bool) -> bytes:
        body = {**request, "model": request.get("model") or self.model, "stream": stream}
        if stream:
            body["stream_options"] = {**(request.get("stream_options") or {}), "include_usage": True}
        return orjson.dumps(body)

    def _failure(self, status: int, body: bytes, retry_after: str | None) -> ModelCallError:
        return ModelCallError(
            f"{status}: {_error_message(body)}",
            retryable=_retryable(status),
            status=status,
            retry_after_s=retry_after_seconds(retry_after),
        )

    def _cost(
        self, headers: Mapping[str, str], request: Mapping[str, Any], usage: Usage | None
    ) -> Money | None:
        if "x-pilothouse-cost-usd" in headers:
            return _cost_header(headers.get("x-pilothouse-cost-usd"))
        if usage is None:
            return None
        priced = _packaged_pricer().cost(self.provider, str(request.get("model") or self.model), usage)
        return priced.total if priced else None

    async def chat(self, request: dict[str, Any], context: CallContext) -> ChatReply:
        if self._client is None:
            await self.start()
        assert self._client is not None
        started = time.perf_counter()
        try:
            response: Response = await self._client.request(
                "POST",
                "/chat/completions",
                self._body(request, False),
                {"traceparent": context.traceparent(new_span_id())},
            )
        except HTTPError as exc:
            raise ModelCallError(f"{type(exc).__name__}: {exc}", retryable=True) from None
        latency_ms = (time.perf_counter() - started) * 1000
        if response.status >= 400:
            raise self._failure(response.status, response.content, response.headers.get("retry-after"))
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise ModelCallError("the endpoint answered something that is not JSON", retryable=True) from None
        if not isinstance(answer, dict):
            raise ModelCallError("the endpoint answered something other than a JSON object", retryable=True)
        usage = _usage(answer)
        trace_id = response.headers.get("x-pilothouse-trace-id") or context.trace_id
        return ChatReply(answer, usage, self._cost(response.headers, request, usage), latency_ms, trace_id)

    async def stream(self, request: dict[str, Any], context: CallContext) -> ChatStream:
        if self._client is None:
            await self.start()
        assert self._client is not None
        started = time.perf_counter()
        opened = self._client.stream(
            "POST",
            "/chat/completions",
            self._body(request, True),
            {"traceparent": context.traceparent(new_span_id())},
        )
        try:
            response: StreamResponse = await opened.__aenter__()
        except HTTPError as exc:
            raise ModelCallError(f"{type(exc).__name__}: {exc}", retryable=True) from None
        if response.status >= 400:
            body = await response.aread()
            await opened.__aexit__(None, None, None)
            raise self._failure(response.status, body, response.headers.get("retry-after"))

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            assembler = StreamAssembler()
            try:
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    try:
                        chunk = orjson.loads(data)
                    except orjson.JSONDecodeError:
                        raise ModelCallError(
                            "the stream sent something that is not JSON", retryable=True
                        ) from None
                    if isinstance(chunk, dict) and "error" in chunk:
                        raise ModelCallError(
                            f"stream failed: {_error_message(data.encode())}", retryable=True
                        )
                    assembler.add(chunk)
                    yield chunk
            except HTTPError as exc:
                raise ModelCallError(f"stream failed: {exc}", retryable=True) from None
            finally:
                await opened.__aexit__(None, None, None)
            answer = assembler.response()
            usage = _usage(answer)
            trace_id = response.headers.get("x-pilothouse-trace-id") or context.trace_id
            latency_ms = (time.perf_counter() - started) * 1000
            cost = self._cost({}, request, usage)  # a gateway's header says "pending" for a stream
            stream.reply = ChatReply(answer, usage, cost, latency_ms, trace_id)

        stream = ChatStream(chunks())
        return stream

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
