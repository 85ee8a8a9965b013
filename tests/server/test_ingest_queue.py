"""The batch writer: large batches are written a chunk of records at a time, in one transaction."""

from __future__ import annotations

import pytest

from pilothouse.domain.traces import ObservationKind, Usage
from pilothouse.server.ingest import CHUNK_SPANS, IngestQueue, PendingExport
from pilothouse.store.sql import SqlStore
from pilothouse.tracing.otlp import RawSpan
from tests.store.test_store import rec, sid, tid


@pytest.mark.slow  # waits out a linger of 1 s, so that the three exports make one batch
def test_a_batch_larger_than_a_chunk_is_stored_whole_and_merged(sqlite_store: SqlStore) -> None:
    per_export = CHUNK_SPANS * 4 // 5
    exports = [[rec(tid(1_000_000 * e + i), sid(1)) for i in range(per_export)] for e in range(3)]
    # A trace whose model call comes in the first export and its root in the last, a chunk apart.
    exports[0].append(
        rec(
            tid(10**12),
            sid(2),
            parent=sid(1),
            kind=ObservationKind.GENERATION,
            model="m",
            usage=Usage(input=3, output=2),
        )
    )
    exports[2].append(rec(tid(10**12), sid(1), name="agent"))
    queue = IngestQueue(sqlite_store, batch_spans=4 * CHUNK_SPANS, linger_s=1.0)
    try:
        for export in exports:
            assert queue.offer(export)
        assert queue.wait_idle(60)
    finally:
        queue.close()
    total = 3 * per_export + 2
    assert queue.stats.written == total and queue.stats.batches == 1 and queue.stats.failed == 0
    assert sqlite_store.count_spans("p1") == total
    detail = sqlite_store.get_trace("p1", tid(10**12))
    assert detail is not None
    assert detail.trace.name == "agent" and detail.trace.observation_count == 2
    assert detail.trace.usage.total == 5


def test_a_span_the_normaliser_cannot_map_is_left_out_alone(sqlite_store: SqlStore) -> None:
    good = RawSpan(tid(1), sid(1), None, "good", 1, 2, 0, "", {}, {}, "s")
    broken = RawSpan(tid(1), sid(2), sid(1), "broken", 1, 2, 0, "", None, {}, "s")  # type: ignore[arg-type]
    queue = IngestQueue(sqlite_store, linger_s=0.0)
    try:
        assert queue.offer(PendingExport("p1", 2, decoded=[good, broken]))
        assert queue.wait_idle(10)
    finally:
        queue.close()
    assert (queue.stats.written, queue.stats.failed) == (1, 1)
    detail = sqlite_store.get_trace("p1", tid(1))
    assert detail is not None and [o.name for o in detail.observations] == ["good"]
