"""The client SDK's set-up: ``init()``, ``flush()``, ``shutdown()`` and ``score()``.

Spans go through the OpenTelemetry SDK (a ``BatchSpanProcessor`` and the OTLP/HTTP exporter), so the
caller's thread only records them; export happens in the background. Scores go to ``/api/scores`` from
a background thread once the spans they refer to have been exported.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx
from opentelemetry import propagate
from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator

from pilothouse.domain.ids import span_id_int, trace_id_int
from pilothouse.domain.scores import make_score

log = logging.getLogger("pilothouse.sdk")

DEFAULT_BASE_URL = "http://127.0.0.1:4000"
TRACER_NAME = "pilothouse"


class TimeOrderedIds(IdGenerator):
    """OpenTelemetry ids whose trace ids begin with the time (see :mod:`pilothouse.domain.ids`): the
    traces of an application sort by time in the store's indexes, which makes storing them cheaper."""

    def generate_span_id(self) -> int:
        return span_id_int()

    def generate_trace_id(self) -> int:
        return trace_id_int()


class _CheckedExporter(SpanExporter):
    """The exporter ``init()`` sends through, counting the spans it could not deliver (the server
    refused the key, was not there, answered an error), so that ``flush()`` can say so instead of
    reporting success; the first failure is logged once with what to check."""

    def __init__(self, inner: SpanExporter, base_url: str) -> None:
        self.inner = inner
        self.base_url = base_url
        self.failed = 0  # spans not delivered since the last flush()
        self.told = False
        self.lock = threading.Lock()

    def export(self, spans: Any) -> SpanExportResult:
        result = self.inner.export(spans)
        if result is not SpanExportResult.SUCCESS:
            with self.lock:
                self.failed += len(spans)
                tell, self.told = not self.told, True
            if tell:
                log.warning(
                    "pilothouse: %d spans were not accepted by %s/v1/traces: check that the server runs "
                    "there (PILOTHOUSE_BASE_URL) and that PILOTHOUSE_API_KEY is one of its keys with the "
                    "'ingest' scope (a refused key is a 401 above)",
                    len(spans),
                    self.base_url,
                )
        return result

    def take_failures(self) -> int:
        with self.lock:
            failed, self.failed = self.failed, 0
        return failed

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


@dataclass
class _Client:
    provider: TracerProvider
    tracer: otel_trace.Tracer
    base_url: str
    api_key: str | None
    owns_provider: bool
    exporter: _CheckedExporter | None = None
    scores: deque[dict[str, Any]] = field(default_factory=deque)
    score_lock: threading.Lock = field(default_factory=threading.Lock)


_client: _Client | None = None
_client_lock = threading.Lock()


def init(
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    service_name: str | None = None,
    environment: str | None = None,
    release: str | None = None,
    exporter: SpanExporter | None = None,
    span_processor: SpanProcessor | None = None,
    tracer_provider: TracerProvider | None = None,
    set_global: bool = True,
) -> None:
    """Start sending traces to Pilothouse.

    ``base_url`` (default ``$PILOTHOUSE_BASE_URL`` or http://127.0.0.1:4000) and ``api_key`` (default
    ``$PILOTHOUSE_API_KEY``) say where. By default a new OpenTelemetry ``TracerProvider`` is created and
    made global, so other OpenTelemetry instrumentation (OpenInference, OpenLLMetry, ...) reports to
    Pilothouse too. Pass ``exporter`` or ``span_processor`` to send elsewhere (tests use
    :class:`pilothouse.testing.InMemoryExporter`), or ``tracer_provider`` to use your own.
    """
    global _client
    from pilothouse.config import ClientSettings

    env = ClientSettings()
    base = (base_url or env.base_url).rstrip("/")
    key = api_key or (env.api_key.get_secret_value() if env.api_key else None)
    owns = tracer_provider is None
    attributes: dict[str, Any] = {"service.name": service_name or env.service_name}
    if environment:
        attributes["deployment.environment.name"] = environment
    if release:
        attributes["service.version"] = release
    provider = tracer_provider or TracerProvider(
        resource=Resource.create(attributes), id_generator=TimeOrderedIds()
    )
    checked: _CheckedExporter | None = None
    if span_processor is None:
        if exporter is None:
            if not key:
                log.warning(
                    "pilothouse.init(): no API key (set PILOTHOUSE_API_KEY or pass api_key=): %s will "
                    "refuse the traces with 401",
                    base,
                )
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            exporter = OTLPSpanExporter(endpoint=f"{base}/v1/traces", headers=headers)
        checked = _CheckedExporter(exporter, base)
        # A deep queue: a burst of spans waits for the exporter instead of being dropped.
        span_processor = BatchSpanProcessor(
            checked, max_queue_size=100_000, schedule_delay_millis=500, max_export_batch_size=2048
        )
    provider.add_span_processor(span_processor)
    if set_global and owns:
        otel_trace.set_tracer_provider(provider)
    with _client_lock:
        if _client is not None and _client.owns_provider:
            _client.provider.shutdown()
        _client = _Client(provider, provider.get_tracer(TRACER_NAME), base, key, owns, checked)


def get_tracer() -> otel_trace.Tracer:
    """The tracer of ``init()``, or the global one before ``init()`` (then spans go wherever the
    application's OpenTelemetry set-up sends them)."""
    client = _client
    return client.tracer if client is not None else otel_trace.get_tracer(TRACER_NAME)


def score(
    name: str,
    value: float | bool | str,
    *,
    trace_id: str | None = None,
    observation_id: str | None = None,
    data_type: str | None = None,
    comment: str | None = None,
    source: str = "code",
) -> None:
    """Score the current trace (or ``trace_id``); sent in the background after its spans.

    Raises ValueError at once for a malformed score (wrong value for its type, no trace)."""
    if trace_id is None:
        ctx = otel_trace.get_current_span().get_span_context()
        if not ctx.is_valid:
            raise ValueError("score() outside a span needs trace_id")
        trace_id = format(ctx.trace_id, "032x")
        if observation_id is None:
            observation_id = format(ctx.span_id, "016x")
    checked = make_score(
        trace_id=trace_id,
        name=name,
        value=value,
        data_type=data_type,
        observation_id=observation_id,
        comment=comment,
        source=source,
    )
    client = _require_client()
    with client.score_lock:
        client.scores.append(
            {
                "id": checked.id,
                "trace_id": checked.trace_id,
                "observation_id": checked.observation_id,
                "name": checked.name,
                "value": value,
                "data_type": checked.data_type.value,
                "source": checked.source.value,
                "comment": checked.comment,
            }
        )
    _ensure_score_sender()


def trace_headers() -> dict[str, str]:
    """W3C ``traceparent`` (and ``tracestate``) headers for the current span, to send with your own
    HTTP calls so that the receiving service's spans join this trace."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers


def flush(timeout_s: float = 10.0) -> bool:
    """Export every finished span and send every pending score; True if all went out in time and the
    server accepted them. False when an export since the last flush failed (the server refused the
    key, or could not be reached) or a score was refused: the first failure is logged with the cause."""
    client = _client
    if client is None:
        return True
    ok = client.provider.force_flush(int(timeout_s * 1000))
    if client.exporter is not None and client.exporter.take_failures():
        ok = False
    return _send_scores(client, deadline=time.monotonic() + timeout_s) and ok


def shutdown() -> None:
    """Flush and stop the SDK (also run at interpreter exit)."""
    global _client
    client = _client
    if client is None:
        return
    flush()
    if client.owns_provider:
        client.provider.shutdown()
    _client = None


def _require_client() -> _Client:
    if _client is None:
        raise RuntimeError("call pilothouse.init() first")
    return _client


def _send_scores(client: _Client, deadline: float) -> bool:
    """POST pending scores; a 404 (trace not stored yet) is retried until ``deadline``."""
    with client.score_lock:
        batch = list(client.scores)
        client.scores.clear()
    if not batch:
        return True
    headers = {"Authorization": f"Bearer {client.api_key}"} if client.api_key else {}
    delay = 0.05
    refused = 0
    with httpx.Client(base_url=client.base_url, headers=headers, timeout=10) as http:
        while batch:
            rest = []
            for item in batch:
                try:
                    response = http.post("/api/scores", json=item)
                except httpx.HTTPError as exc:
                    log.warning("sending score %s failed: %s", item["name"], exc)
                    rest.append(item)
                    continue
                if response.status_code == 404:
                    rest.append(item)
                elif response.status_code >= 400:
                    refused += 1
                    log.warning("score %s rejected: %s", item["name"], response.text[:200])
            batch = rest
            if batch and time.monotonic() + delay < deadline:
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
            elif batch:
                log.warning("%d scores not sent (their traces were not found in time)", len(batch))
                return False
    return refused == 0


_sender_started = False


def _ensure_score_sender() -> None:
    global _sender_started
    if _sender_started:
        return
    _sender_started = True

    def loop() -> None:
        while True:
            time.sleep(1.0)
            client = _client
            if client is not None and client.scores:
                client.provider.force_flush(5000)
                _send_scores(client, deadline=time.monotonic() + 30)

    threading.Thread(target=loop, name="pilothouse-scores", daemon=True).start()


atexit.register(shutdown)
