"""The durable mode's start-up: replay the spool a previous process left.

Every record of every leftover segment is decoded as the request path decoded it (an OTLP export
through :func:`pilothouse.server.collector.decode_export`, gateway spans from their JSON) and stored
through the ingest queue's writer, in batches, before the server takes requests and before the
budgets read their spend (so a replayed gateway call's cost is in the ledgers). Replay is idempotent:
a span already stored (committed before the crash, its segment not yet deleted) is skipped by the
store, so nothing is counted twice. A torn last record (written, never fsynced, never acknowledged)
is dropped. The segments are deleted once their records are stored.

A streamed gateway call leaves an interrupted record (``I``: the call at its worst-case cost, its
budget hold) before its first chunk, and its own record (``S``, the same span) when it ends. Replay
keeps the interrupted records that no later record of their span superseded, and stores them once
every segment is read: a call that a kill -9 cut mid-stream is recorded as interrupted, at its
worst-case cost, and counts toward its budgets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pilothouse.config import Settings
from pilothouse.domain.traces import SpanRecord
from pilothouse.server.collector import decode_export
from pilothouse.server.errors import ApiError
from pilothouse.server.ingest import IngestQueue, PendingExport
from pilothouse.server.spool import Spool, read_segment
from pilothouse.server.spool_records import (
    INTERIM,
    OTLP,
    SPANS,
    UnreadableRecord,
    read_otlp,
    read_spans,
)

log = logging.getLogger("pilothouse.spool")


@dataclass(slots=True)
class ReplayReport:
    """What a replay found: segments, records, spans offered to the store, torn bytes dropped and
    records that could not be read."""

    segments: int = 0
    records: int = 0
    spans: int = 0
    torn_bytes: int = 0
    unreadable: int = 0
    interrupted: int = 0  # streamed gateway calls recorded as interrupted (worst-case cost)


def replay_spool(spool: Spool, ingest: IngestQueue, settings: Settings) -> ReplayReport:
    """Store the records of the spool's leftover segments, then delete the segments."""
    report = ReplayReport()
    interim: dict[tuple[str, str], SpanRecord] = {}  # interrupted records not superseded (yet)
    for path in spool.leftover:
        records, torn = read_segment(path)
        report.segments += 1
        report.torn_bytes += torn
        if torn:
            log.warning("spool segment %s: a torn record of %d bytes at its end was dropped", path.name, torn)
        exports: list[PendingExport] = []
        for payload in records:
            report.records += 1
            try:
                if payload[:1] == INTERIM:
                    interim.update((_key(r), r) for r in read_spans(payload))
                    continue
                export = _export(payload, settings)
            except (ApiError, UnreadableRecord, ValueError) as exc:
                report.unreadable += 1
                log.error("a record of spool segment %s cannot be replayed: %s", path.name, exc)
                continue
            for record in export.records or ():  # a call's own record supersedes its interrupted one
                interim.pop(_key(record), None)
            report.spans += export.count
            exports.append(export)
        ingest.store_now(exports)  # one segment at a time: memory stays bounded by a segment
    if interim:  # streams the stop cut: recorded as interrupted (already stored ones are skipped)
        report.interrupted = len(interim)
        report.spans += len(interim)
        ingest.store_now([PendingExport(r.project_id, 1, records=[r]) for r in interim.values()])
        log.warning(
            "%d streamed gateway calls were cut by the stop: recorded as interrupted, at their "
            "worst-case cost",
            len(interim),
        )
    spool.discard_leftover()
    if report.segments:
        log.warning(
            "replayed the spool: %d segments, %d records, %d spans (already stored ones are skipped)",
            report.segments,
            report.records,
            report.spans,
        )
    return report


def _key(record: SpanRecord) -> tuple[str, str]:
    return record.observation.trace_id, record.observation.id


def _export(payload: bytes, settings: Settings) -> PendingExport:
    kind = payload[:1]
    if kind == OTLP:
        project_id, content_type, encoding, body = read_otlp(payload)
        return decode_export(project_id, body, content_type, encoding, settings)
    if kind == SPANS:
        records = read_spans(payload)
        project = records[0].project_id if records else ""
        return PendingExport(project, len(records), records=records)
    raise UnreadableRecord(f"unknown spool record kind {kind!r}")
