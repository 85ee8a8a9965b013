"""The ingestion pipeline's back half: a bounded in-memory queue and one batch-writer thread.

Request handlers check a body and :meth:`IngestQueue.offer` it as a :class:`PendingExport`: all of
it or none (the handler then answers 429 with Retry-After). The writer takes exports up to a batch of
spans, normalises them (protobuf attributes are read here, off the request path, in one thread so the
two do not trade the GIL span by span) and stores the batch in one transaction (on PostgreSQL, one per
chunk of records); nothing on the request path waits for the database. ``close()`` drains the
queue: a SIGTERM loses nothing accepted.

With a :class:`~pilothouse.server.spool.Spool` (the durable mode), each accepted export that carries its
spool record (``PendingExport.durable``) is appended to the spool as it is queued, and its segment is
told (``Spool.done``) once the batch holding it is committed: a kill -9 then loses nothing the spool
acknowledged (the server replays the spool at start-up: ``pilothouse.server.durable``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from pilothouse.costs.pricing import Pricer
from pilothouse.domain.duplicates import count_calls_once
from pilothouse.domain.traces import SpanRecord, cap_names, replace_nul_characters
from pilothouse.server.gc_pause import paused_gc
from pilothouse.server.spool import Spool
from pilothouse.store.sql import SqlStore
from pilothouse.tracing.conventions import normalise_span
from pilothouse.tracing.otlp import CheckedExport, RawSpan, iter_checked

log = logging.getLogger("pilothouse.ingest")
CHUNK_SPANS = 5_000  # records normalised and written at a time within a batch's transaction
RECORD_BYTES = 2_048  # a queued gateway span's fields and attributes, besides its texts


@dataclass(slots=True)
class PendingExport:
    """One accepted export: records already normalised, decoded spans (OTLP/JSON) or a checked
    protobuf export, to normalise. ``durable``: its spool record, appended when it is queued (the
    durable mode); ``spool_segment``: the segment that holds it; ``superseded_segment``: the segment
    of the interrupted record this gateway call's record replaces (done with at the same commit)."""

    project_id: str
    count: int
    records: Sequence[SpanRecord] | None = None
    protobuf: CheckedExport | None = None
    decoded: Sequence[RawSpan] | None = None
    durable: bytes | None = None
    spool_segment: int | None = None
    superseded_segment: int | None = None  # the segment of a stream's interrupted record it replaces
    size: int = 0  # bytes it holds in the queue: its decompressed body (records: _records_size)
    rejected: int = 0  # spans of the body that were refused at decode (not queued)
    reason: str | None = None  # the first one's reason

    def normalise(self) -> tuple[list[SpanRecord], int]:
        """The export's records (normalising decoded spans or a protobuf export now), and how many
        spans the normaliser could not map: those are left out (the first one's error is logged),
        the rest are kept."""
        if self.records is not None:
            return list(self.records), 0
        if self.decoded is not None:
            raws: Iterable[RawSpan] = self.decoded
        else:
            assert self.protobuf is not None
            raws = iter_checked(self.protobuf)
        records, failed = [], 0
        for raw in raws:
            try:
                records.append(normalise_span(raw, self.project_id))
            except Exception:
                failed += 1
                if failed == 1:
                    log.exception("span %s of trace %s could not be normalised", raw.span_id, raw.trace_id)
        count_calls_once(records)  # one model call traced by two instrumentations counts once
        return records, failed


def _records_size(records: Sequence[SpanRecord]) -> int:
    """About the bytes that records hold: their texts, and :data:`RECORD_BYTES` each for the rest."""
    size = RECORD_BYTES * len(records)
    for record in records:
        o = record.observation
        size += len(o.input or "") + len(o.output or "") + len(o.request_model or "")
    return size


class SpanSink(Protocol):
    """Where the batch writer stores its batches instead of the store: the SQLite span writer process
    of ``serve --workers N`` (:class:`pilothouse.server.span_writer.WriterClient`)."""

    @property
    def down(self) -> str | None:
        """Why it cannot take spans now (None: it can)."""

    @property
    def pid(self) -> int | None:
        """The process that stores the spans, once known."""

    def write_span_chunks(self, chunks: Iterable[Sequence[SpanRecord]]) -> None:
        """Store the chunks; return once they are committed."""

    def close(self) -> None:
        """Let go of it (after the queue drained)."""


@dataclass(slots=True)
class IngestStats:
    """Counters since start-up."""

    accepted: int = 0
    rejected: int = 0
    written: int = 0
    failed: int = 0
    batches: int = 0


class IngestQueue:
    """Bounded queue + batch writer thread in front of the store."""

    def __init__(
        self,
        store: SqlStore,
        *,
        max_spans: int = 200_000,
        max_bytes: int = 128 * 1024 * 1024,
        batch_spans: int = 20_000,
        linger_s: float = 0.25,
        retry_delays_s: Sequence[float] = (0.1, 0.5, 2.0),
        pricer: Pricer | None = None,
        spool: Spool | None = None,
        sink: SpanSink | None = None,
    ) -> None:
        self.store = store
        self.sink = sink  # another process stores the batches (SQLite with workers); else the store
        self.spool = spool  # the durable mode's write-ahead spool
        self.pricer = pricer  # prices model calls that arrive without a cost (SDK and OTLP spans)
        self.max_spans = max_spans
        self.max_bytes = max_bytes  # the bodies held: a few large exports fill it before max_spans does
        # Under a backlog, bigger transactions write fewer index pages per span: random trace ids spread a
        # batch's inserts over the whole trace-id indexes, and each commit rewrites every page it touched
        # (measure with `python benchmarks/ingest.py --prefill 400000` at two ingest_batch_spans settings).
        self.batch_spans = batch_spans
        self.linger_s = linger_s  # wait this long for a fuller batch: fewer, larger transactions
        self.retry_delays_s = tuple(retry_delays_s)
        self.stats = IngestStats()
        self._pending: deque[PendingExport] = deque()
        self._pending_spans = 0
        self._pending_bytes = 0
        self._in_flight = 0
        self._in_flight_bytes = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="pilothouse-batch-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Spans accepted but not yet stored."""
        return self._pending_spans + self._in_flight

    @property
    def unavailable(self) -> str | None:
        """Why spans cannot be stored now (the span writer process is restarting), or None."""
        return self.sink.down if self.sink is not None else None

    def offer(self, export: PendingExport | Sequence[SpanRecord], *, force: bool = False) -> bool:
        """Queue a whole export (or normalised records) and return True, or nothing and return False
        when there is no room. ``force``: up to twice the limit (the durable mode records a gateway
        call it has answered even while OTLP exports get 429)."""
        if not isinstance(export, PendingExport):
            project = export[0].project_id if export else ""
            export = PendingExport(project, len(export), records=export, size=_records_size(export))
        with self._cond:
            limit = 2 * self.max_spans if force else self.max_spans
            byte_limit = 2 * self.max_bytes if force else self.max_bytes
            if (
                self._closing
                or self._pending_spans + self._in_flight + export.count > limit
                or self._pending_bytes + self._in_flight_bytes + export.size > byte_limit
            ):
                self.stats.rejected += export.count
                return False
            if self.spool is not None and export.durable is not None:
                # appended before the writer can see the export: its segment waits for its commit
                export.spool_segment = self.spool.append(export.durable)
                export.durable = None
            self._pending.append(export)
            self._pending_spans += export.count
            self._pending_bytes += export.size
            self.stats.accepted += export.count
            # Wake the writer when it waits for work or a batch is full; not on every export while it
            # lingers (a wake-up per gateway call would cost a thread switch each, and end the linger).
            if len(self._pending) == 1 or self._pending_spans >= self.batch_spans:
                self._cond.notify()
        return True

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until everything accepted so far is stored (tests, benchmarks, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending_spans or self._in_flight:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float = 60.0) -> None:
        """Stop accepting, store everything pending, stop the writer."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("ingest writer did not drain in %.0fs; %d spans unwritten", timeout, self.pending)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closing:
                    self._cond.wait()
                if not self._pending and self._closing:
                    return
                # Under a trickle of small exports (the gateway records one span per call), wait a
                # moment for more: per-transaction costs are then shared by many spans.
                deadline = time.monotonic() + self.linger_s
                while not self._closing and self._pending_spans < self.batch_spans:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                exports = [self._pending.popleft()]
                taken, size = exports[0].count, exports[0].size
                while self._pending and taken + self._pending[0].count <= self.batch_spans:
                    exports.append(self._pending.popleft())
                    taken += exports[-1].count
                    size += exports[-1].size
                self._pending_spans -= taken
                self._in_flight = taken
                self._pending_bytes -= size
                self._in_flight_bytes = size
            failed = self.stats.failed
            with paused_gc():  # a batch's objects live until it is stored (python benchmarks/ingest.py)
                self._store(exports)
            if self.spool is not None:
                if self.stats.failed == failed:
                    self.spool.done(
                        segment
                        for e in exports
                        for segment in (e.spool_segment, e.superseded_segment)
                        if segment is not None
                    )
                else:  # the database refused some of it: the next start replays the batch (once each)
                    log.warning("a batch with unstored spans stays on the spool for the next start")
            with self._cond:
                self._in_flight = 0
                self._in_flight_bytes = 0
                self._cond.notify_all()

    def store_now(self, exports: Sequence[PendingExport]) -> None:
        """Normalise, price and store exports in the calling thread, in batches of ``batch_spans``
        (the spool's replay at start-up, before the queue takes anything)."""
        batch: list[PendingExport] = []
        spans = 0
        for export in exports:
            if batch and spans + export.count > self.batch_spans:
                self._store(batch)
                batch, spans = [], 0
            batch.append(export)
            spans += export.count
        if batch:
            self._store(batch)

    def _store(self, exports: list[PendingExport]) -> None:
        """Normalise, price and store the exports as one batch, :data:`CHUNK_SPANS` records at a time
        (a retry normalises them again rather than keeping every record of a large batch)."""
        unreadable: set[int] = set()  # exports that could not be normalised, counted and logged once
        counted: set[int] = set()  # exports whose unmappable spans were counted (a retry maps again)

        def chunks() -> Iterator[list[SpanRecord]]:
            chunk: list[SpanRecord] = []
            for i, export in enumerate(exports):
                if i in unreadable:
                    continue
                try:
                    records, failed = export.normalise()
                    for record in records:
                        cap_names(record.observation)
                        replace_nul_characters(record)
                        # spans from outside (SDK, OTLP) are priced here; the gateway's records
                        # carry its own decision (a failed call after an upstream was asked costs
                        # unknown, which pricing its zero tokens would have made $0)
                        if self.pricer is not None and export.records is None:
                            self.pricer.price_observation(record.observation)
                except Exception:
                    unreadable.add(i)
                    self.stats.failed += export.count
                    log.exception("an export of %d spans could not be normalised", export.count)
                    continue
                if i not in counted:
                    counted.add(i)
                    self.stats.failed += failed
                chunk.extend(records)
                if len(chunk) >= CHUNK_SPANS:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk

        self._write(chunks)

    def _write(self, chunks: Callable[[], Iterator[list[SpanRecord]]]) -> None:
        for delay in (*self.retry_delays_s, None):
            handed = 0

            def counted() -> Iterator[list[SpanRecord]]:
                nonlocal handed
                for chunk in chunks():
                    handed += len(chunk)
                    yield chunk

            try:
                (self.sink or self.store).write_span_chunks(counted())
            except Exception:
                if delay is None:
                    break
                log.warning("writing %d spans failed; retrying in %.1fs", handed, delay, exc_info=True)
                time.sleep(delay)
            else:
                self.stats.written += handed
                self.stats.batches += 1
                return
        # The batch keeps failing. What was accepted was checked at decode (types, ranges, sizes), so
        # this is the database, not the data: the batch is counted as failed and logged. No falling
        # back to one transaction per span: that let one tenant's bad export slow everyone's ingest.
        self.stats.failed += handed
        log.error(
            "a batch of %d spans could not be stored after %d retries", handed, len(self.retry_delays_s)
        )
