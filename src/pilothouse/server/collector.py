"""The OTLP/HTTP collector: ``POST /v1/traces`` (and the same at :data:`LANGFUSE_OTLP_PATH`, where the
Langfuse SDK exports, so that ``LANGFUSE_BASE_URL`` alone points it here).

check (protobuf or JSON, gzip) -> bounded queue -> normalise and store (in the batch writer).
Answers as the OTLP spec says: 200 with an ExportTraceServiceResponse (``partial_success`` with the
number of spans rejected and the first one's reason when some were), 400 for a body that cannot be
decoded or where every span was rejected (nothing of it is stored), 413 past a size limit (the body,
decompressed, or the spans and attribute values of one export), 429 with Retry-After when the queue
is full (of spans or of bytes), 503 with Retry-After while the span writer process is restarting
(SQLite with ``--workers``: :mod:`pilothouse.server.span_writer`), and 429 too, before reading the
body, when the server already holds its budget of request bodies (``max_inflight_body_bytes``,
:class:`pilothouse.server.body.BodyBudget`).

A small body (up to :data:`INLINE_BYTES` decompressed) is checked on the event loop: a thread hop
would cost more than the work. A larger one is decompressed (as a stream, stopping at the cap) and
checked in a thread, one at a time (``Services.decode_slots``), so a large or hostile export never
stalls the loop nor holds more than one body's worth of memory at once. The C reader checks protobuf
without holding the GIL; JSON past :data:`JSON_PROCESS_BYTES` is parsed in a worker process
(``server/json_decoder.py``), since parsing JSON holds the GIL throughout.
"""

from __future__ import annotations

import asyncio

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from pilothouse.config import Settings
from pilothouse.domain.keys import Scope
from pilothouse.server.body import RETRY_AFTER_S, BodyHold, read_body
from pilothouse.server.errors import ApiError
from pilothouse.server.ingest import PendingExport
from pilothouse.server.spool_records import otlp_record
from pilothouse.server.state import Services
from pilothouse.tracing.otlp import (
    DecodeLimits,
    Decompression,
    OtlpDecodeError,
    OtlpTooLarge,
    check_protobuf,
    export_response,
    is_json,
)
from pilothouse.tracing.otlp_json import decode_json
from pilothouse.tracing.otlp_logs import decode_logs

LANGFUSE_OTLP_PATH = "/api/public/otel/v1/traces"  # the Langfuse SDK's OTLP endpoint (HTTP Basic auth)
LANGFUSE_PROJECTS_PATH = "/api/public/projects"  # what the Langfuse SDK's auth_check() reads
LANGFUSE_NOT_SERVED = (
    " Of Langfuse's API, Pilothouse serves only the trace export (POST /api/public/otel/v1/traces) and"
    " GET /api/public/projects (the SDK's auth_check); prompts, scores and datasets are Pilothouse's own"
    " (docs/tracing.md)."
)
INLINE_BYTES = 64 * 1024  # decompressed bodies up to this size are checked on the event loop
JSON_PROCESS_BYTES = 256 * 1024  # decompressed OTLP/JSON past this size is parsed in a worker process


def decode_limits(settings: Settings) -> DecodeLimits:
    """The per-export limits of the settings."""
    return DecodeLimits(
        span_attributes=settings.max_span_attributes,
        value_bytes=settings.max_attribute_value_bytes,
        export_spans=settings.max_export_spans,
        export_values=settings.max_export_values,
        key_bytes=settings.max_attribute_key_bytes,
    )


def _checked(project_id: str, body: bytes, json: bool, limits: DecodeLimits) -> PendingExport:
    """The export of a decompressed body, checked (JSON: decoded), its spans not yet made."""
    if json:
        # Decoded (and so checked) here; normalised by the writer, off the request path.
        decoded = decode_json(body, limits)
        return PendingExport(
            project_id,
            len(decoded.spans),
            decoded=decoded.spans,
            size=len(body),
            rejected=decoded.rejected,
            reason=decoded.reason,
        )
    # Checked here, so a bad body is refused whole; the spans are made by the writer.
    checked = check_protobuf(body, limits)
    return PendingExport(
        project_id,
        checked.count,
        protobuf=checked,
        size=len(body),
        rejected=checked.rejected,
        reason=checked.reason,
    )


def _decompressed(decompression: Decompression) -> bytes:
    decompression.run(None)
    return decompression.result()


async def _checked_large(
    state: Services, project_id: str, decompression: Decompression, json: bool, limits: DecodeLimits
) -> PendingExport:
    """A large body, decompressed and checked off the event loop."""
    body = await asyncio.to_thread(_decompressed, decompression)
    if not json or len(body) <= JSON_PROCESS_BYTES:
        return await asyncio.to_thread(_checked, project_id, body, json, limits)
    protobuf, rejected, reason = await state.json_decoder.to_protobuf(body, limits)
    checked = await asyncio.to_thread(check_protobuf, protobuf, limits)
    return PendingExport(
        project_id, checked.count, protobuf=checked, size=len(body), rejected=rejected, reason=reason
    )


async def export_traces(request: Request) -> Response:
    """Receive one OTLP trace export."""
    state: Services = request.app.state.pilothouse
    principal = await state.auth.authenticate(request, Scope.INGEST)
    settings = state.settings
    # the body's bytes are held in the server's body budget from before it is read until it is
    # checked: however many clients upload at once, the bodies held stay within the budget
    hold = BodyHold(state.body_budget)
    try:
        body = await read_body(request, settings.max_body_bytes, hold)
        export, json = await _checked_export(request, state, principal.project_id, body)
    finally:
        hold.release()
    return _accept(request, state, principal.project_id, body, export, json)


async def langfuse_projects(request: Request) -> Response:
    """The key's project in the shape of Langfuse's ``GET /api/public/projects``, so that the Langfuse
    SDK's ``auth_check()`` passes with a Pilothouse key (one with the ``ingest`` scope, as its exports
    need) and fails with a refused one."""
    state: Services = request.app.state.pilothouse
    principal = await state.auth.authenticate(request, Scope.INGEST)
    project = {
        "id": principal.project_id,
        "name": principal.project_id,
        "organization": {"id": "pilothouse", "name": "Pilothouse"},
        "metadata": {},
    }
    return JSONResponse({"data": [project]})


async def _checked_export(
    request: Request, state: Services, project_id: str, body: bytes
) -> tuple[PendingExport, bool]:
    """The export of a body, checked (on the event loop when small, else in a thread, one at a time)."""
    settings = state.settings
    content_type = request.headers.get("content-type")
    try:
        json = is_json(content_type)
        limits = decode_limits(settings)
        decompression = Decompression(
            body, request.headers.get("content-encoding"), settings.max_decompressed_bytes
        )
        if decompression.run(INLINE_BYTES) and decompression.size <= INLINE_BYTES:
            export = _checked(project_id, decompression.result(), json, limits)
        else:
            async with state.decode_slots:
                export = await _checked_large(state, project_id, decompression, json, limits)
    except OtlpTooLarge as exc:
        raise ApiError(413, str(exc), code="body_too_large") from exc
    except OtlpDecodeError as exc:
        raise ApiError(400, str(exc), code="invalid_otlp") from exc
    return export, json


def _accept(
    request: Request, state: Services, project_id: str, body: bytes, export: PendingExport, json: bool
) -> Response:
    """Queue a checked export (on the spool first in the durable mode) and answer as OTLP says."""
    if export.rejected and not export.count:
        raise ApiError(400, _rejected(export), code="invalid_otlp")
    if export.size > state.ingest.max_bytes:  # it would never fit: retrying cannot help
        raise ApiError(
            413,
            f"Export of {export.size} bytes (decompressed) is larger than the ingest queue's "
            f"{state.ingest.max_bytes}-byte budget.",
            code="body_too_large",
        )
    if state.spool is not None:  # the durable mode: the body as received, for the spool
        export.durable = otlp_record(
            project_id,
            request.headers.get("content-type"),
            request.headers.get("content-encoding"),
            body,
        )
    _queue(state, export)
    message = _rejected(export) if export.rejected else ""
    if json:
        return Response(export_response(export.rejected, message, json=True), media_type="application/json")
    return Response(
        export_response(export.rejected, message, json=False), media_type="application/x-protobuf"
    )


def _queue(state: Services, export: PendingExport) -> None:
    """Hand the export to the ingest queue: 503 while the span writer process is restarting (SQLite
    with workers: nothing is queued, the client retries), 429 when the queue is full."""
    if not export.count:
        return
    if (down := state.ingest.unavailable) is not None:
        raise ApiError(
            503, f"{down}; retry later.", code="writer_unavailable", headers={"Retry-After": RETRY_AFTER_S}
        )
    if not state.ingest.offer(export):
        raise ApiError(
            429,
            "Ingest queue is full; retry later.",
            code="ingest_backpressure",
            headers={"Retry-After": RETRY_AFTER_S},
        )


def _rejected(export: PendingExport) -> str:
    return f"{export.rejected} span(s) rejected; the first: {export.reason}"


def decode_export(
    project_id: str, body: bytes, content_type: str | None, encoding: str | None, settings: Settings
) -> PendingExport:
    """One export body checked in the calling thread, with the settings' limits: what the spool's
    replay reads back at start-up. 400 when it does not decode, 413 past the limits."""
    try:
        decompression = Decompression(body, encoding, settings.max_decompressed_bytes)
        return _checked(
            project_id, _decompressed(decompression), is_json(content_type), decode_limits(settings)
        )
    except OtlpTooLarge as exc:
        raise ApiError(413, str(exc), code="body_too_large") from exc
    except OtlpDecodeError as exc:
        raise ApiError(400, str(exc), code="invalid_otlp") from exc


async def export_logs(request: Request) -> Response:
    """Receive one OTLP log export (protobuf): its GenAI events are stored as events of their span
    (:mod:`pilothouse.tracing.otlp_logs`); other log records are accepted and not kept."""
    state: Services = request.app.state.pilothouse
    principal = await state.auth.authenticate(request, Scope.INGEST)
    settings = state.settings
    hold = BodyHold(state.body_budget)
    try:
        body = await read_body(request, settings.max_body_bytes, hold)
        try:
            if is_json(request.headers.get("content-type")):
                raise OtlpDecodeError("OTLP/JSON logs are not supported: send application/x-protobuf")
            decompression = Decompression(
                body, request.headers.get("content-encoding"), settings.max_decompressed_bytes
            )
            async with state.decode_slots:
                plain = await asyncio.to_thread(_decompressed, decompression)
                decoded = await asyncio.to_thread(decode_logs, plain, decode_limits(settings))
        except OtlpTooLarge as exc:
            raise ApiError(413, str(exc), code="body_too_large") from exc
        except OtlpDecodeError as exc:
            raise ApiError(400, str(exc), code="invalid_otlp") from exc
    finally:
        hold.release()
    spans = decoded.spans
    if decoded.rejected and not spans:  # every GenAI record rejected: nothing of it is kept
        raise ApiError(
            400,
            f"{decoded.rejected} log record(s) rejected; the first: {decoded.reason}",
            code="invalid_otlp",
        )
    if len(plain) > state.ingest.max_bytes:  # it would never fit: retrying cannot help
        raise ApiError(
            413,
            f"Export of {len(plain)} bytes (decompressed) is larger than the ingest queue's "
            f"{state.ingest.max_bytes}-byte budget.",
            code="body_too_large",
        )
    export = PendingExport(principal.project_id, len(spans), decoded=spans, size=len(plain))
    _queue(state, export)
    answer = ExportLogsServiceResponse()  # empty, or partial_success naming the records rejected
    if decoded.rejected:
        answer.partial_success.rejected_log_records = decoded.rejected
        answer.partial_success.error_message = f"the first rejected: {decoded.reason}"
    return Response(answer.SerializeToString(), media_type="application/x-protobuf")


async def export_metrics(request: Request) -> Response:
    """``POST /v1/metrics``: accepted (authenticated, size-checked) and not kept, so that an exporter
    configured with one OTLP endpoint for every signal does not log errors. Pilothouse computes its
    figures from the spans."""
    state: Services = request.app.state.pilothouse
    await state.auth.authenticate(request, Scope.INGEST)
    hold = BodyHold(state.body_budget)
    try:
        await read_body(request, state.settings.max_body_bytes, hold)
    finally:
        hold.release()
    json = "json" in (request.headers.get("content-type") or "")
    return Response(
        b"{}" if json else b"", media_type="application/json" if json else "application/x-protobuf"
    )
