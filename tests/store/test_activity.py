"""The Users and Sessions pages' first step: the walk down the time index finds the same ids, in the
same order, as grouping every trace of the range, ties in time and traces without an id included; on
SQLite and on the real PostgreSQL."""

from __future__ import annotations

import random

import pytest

from pilothouse.domain.traces import Observation, SpanRecord, TraceAttributes
from pilothouse.store import activity
from pilothouse.store.sql import SqlStore

BASE = 1_800_000_000 * 10**9


def _fill(store: SqlStore) -> None:
    rng = random.Random(5)
    records = []
    for i in range(900):
        start = BASE + rng.randrange(300) * 10**9  # many traces share a start: ties
        user = rng.choice([None, None, *(f"u{n:02d}" for n in range(40))])
        session = rng.choice([None, *(f"s{n:03d}" for n in range(300))])
        records.append(
            SpanRecord(
                "p",
                Observation(f"{i:032x}", f"{i:016x}", "root", start, start + 10**6),
                TraceAttributes(user_id=user, session_id=session),
            )
        )
    store.write_spans(records)


@pytest.mark.parametrize("column", ["user_id", "session_id"])
def test_the_walk_finds_what_grouping_finds(
    store: SqlStore, column: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fill(store)
    ranges = [(BASE, BASE + 300 * 10**9), (BASE + 100 * 10**9, BASE + 200 * 10**9), (0, BASE)]
    with store.engine.connect() as conn:
        for start, end in ranges:
            for count in (1, 3, 26, 51, 400):
                walked = activity._walk(conn, "p", column, start, end, count)
                grouped = activity._grouped(conn, "p", column, start, end, count, None)
                assert walked == grouped, (start, end, count)
        # past its budget the walk gives up, and the range is grouped instead
        monkeypatch.setattr(activity, "WALK_TRACES", 10)
        monkeypatch.setattr(activity, "_CHUNK", 5)
        assert activity._walk(conn, "p", column, BASE, BASE + 300 * 10**9, 400) is None
        found = activity.newest_ids(conn, "p", column, BASE, BASE + 300 * 10**9, 400)
        assert found == activity._grouped(conn, "p", column, BASE, BASE + 300 * 10**9, 400, None)
    # the pages after the first one follow on from it
    page = store.activity("p", column, BASE, BASE + 300 * 10**9, 7, None)
    with store.engine.connect() as conn:
        every = activity._grouped(conn, "p", column, BASE, BASE + 300 * 10**9, 10**6, None)
    assert [a.id for a in page.data] == [i for i, _ in every[:7]]
    from pilothouse.domain.queries import decode_cursor

    assert page.next_cursor is not None
    rest = store.activity("p", column, BASE, BASE + 300 * 10**9, 7, decode_cursor(page.next_cursor))
    assert [a.id for a in rest.data] == [i for i, _ in every[7:14]]
