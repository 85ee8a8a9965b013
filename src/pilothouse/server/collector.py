"""The OTLP/HTTP collector: ``POST /v1/traces``.

check (protobuf or JSON, gzip) -> bounded queue -> normalise and store (in the batch writer).
Answers as the OTLP spec says: 200 with an empty ExportTraceServiceResponse, 400 for a body that
cannot be decoded (nothing of it is stored), 413 past the size limit, 429 with Retry-After when the
queue is full.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from pilothouse.domain.keys import Scope
from pilothouse.server.body import read_body
from pilothouse.server.errors import ApiError
from pilothouse.server.ingest import PendingExport
from pilothouse.server.spool_records import otlp_record
from pilothouse.server.state import Services
from pilothouse.tracing.otlp import OtlpDecodeError, check_protobuf, decode_json, decompress, is_json

RETRY_AFTER_S = "1"


async def export_traces(request: Request) -> Response:
    """Receive one OTLP trace export."""
    state: Services = request.app.state.pilothouse
    principal = await state.auth.authenticate(request, Scope.INGEST)
    limit = state.settings.max_body_bytes
    body = await read_body(request, limit)
    content_type = request.headers.get("content-type")
    encoding = request.headers.get("content-encoding")
    export = decode_export(principal.project_id, body, content_type, encoding, limit)
    if state.spool is not None:  # the durable mode: the body as received, for the spool
        export.durable = otlp_record(principal.project_id, content_type, encoding, body)
    if export.count and not state.ingest.offer(export):
        raise ApiError(
            429,
            "Ingest queue is full; retry later.",
            code="ingest_backpressure",
            headers={"Retry-After": RETRY_AFTER_S},
        )
    if (content_type or "").startswith("application/json"):
        return Response(b"{}", media_type="application/json")
    return Response(b"", media_type="application/x-protobuf")


def decode_export(
    project_id: str, body: bytes, content_type: str | None, encoding: str | None, limit: int
) -> PendingExport:
    """Check one export body (also what the spool's replay reads back): 400 when it does not
    decode, 413 when it decompresses to more than 4 times ``limit``."""
    try:
        body = decompress(body, encoding)
        if len(body) > 4 * limit:
            raise ApiError(413, "Decompressed body is too large.", code="body_too_large")
        if is_json(content_type):
            # Decoded (and so checked) here; normalised by the writer, off the request path.
            decoded = decode_json(body)
            return PendingExport(project_id, len(decoded), decoded=decoded)
        # Checked here, so a bad body is refused whole; the spans are made by the writer.
        checked = check_protobuf(body)
        return PendingExport(project_id, checked.count, protobuf=checked)
    except OtlpDecodeError as exc:
        raise ApiError(400, str(exc), code="invalid_otlp") from exc
