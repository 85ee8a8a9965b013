"""The ingestion pipeline's back half: a bounded in-memory queue and one batch-writer thread.

Request handlers decode and normalise, then :meth:`IngestQueue.offer` the records: all of them or
none (the handler then answers 429 with Retry-After). The writer takes up to a batch at a time and
stores it in one transaction; nothing on the request path waits for the database. ``close()``
drains the queue, so a SIGTERM loses nothing that was accepted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from pilothouse.domain.traces import SpanRecord
from pilothouse.store.sql import SqlStore

log = logging.getLogger("pilothouse.ingest")


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
        batch_spans: int = 5_000,
        retry_delays_s: Sequence[float] = (0.1, 0.5, 2.0),
    ) -> None:
        self.store = store
        self.max_spans = max_spans
        self.batch_spans = batch_spans
        self.retry_delays_s = tuple(retry_delays_s)
        self.stats = IngestStats()
        self._pending: deque[SpanRecord] = deque()
        self._in_flight = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="pilothouse-batch-writer", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Records accepted but not yet stored."""
        return len(self._pending) + self._in_flight

    def offer(self, records: Sequence[SpanRecord]) -> bool:
        """Queue all ``records`` and return True, or none and return False when there is no room."""
        with self._cond:
            if self._closing or len(self._pending) + self._in_flight + len(records) > self.max_spans:
                self.stats.rejected += len(records)
                return False
            self._pending.extend(records)
            self.stats.accepted += len(records)
            self._cond.notify()
        return True

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until everything accepted so far is stored (tests, benchmarks, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._in_flight:
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
                n = min(self.batch_spans, len(self._pending))
                batch = [self._pending.popleft() for _ in range(n)]
                self._in_flight = n
            self._write(batch)
            with self._cond:
                self._in_flight = 0
                self._cond.notify_all()

    def _write(self, batch: list[SpanRecord]) -> None:
        for delay in (*self.retry_delays_s, None):
            try:
                self.store.write_spans(batch)
            except Exception:
                if delay is None:
                    break
                log.warning("writing %d spans failed; retrying in %.1fs", len(batch), delay, exc_info=True)
                time.sleep(delay)
            else:
                self.stats.written += len(batch)
                self.stats.batches += 1
                return
        # The batch keeps failing: store what can be stored, one span at a time, and say what could not.
        for record in batch:
            try:
                self.store.write_spans([record])
                self.stats.written += 1
            except Exception:
                self.stats.failed += 1
                log.exception(
                    "span %s of trace %s could not be stored",
                    record.observation.id,
                    record.observation.trace_id,
                )
