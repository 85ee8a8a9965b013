"""Trace ids Pilothouse makes itself: time first (they sort by time), then random bits."""

from __future__ import annotations

import os
import re
import time

from pilothouse.domain.ids import new_span_id, new_trace_id


def test_trace_ids_begin_with_the_time_and_sort_by_it() -> None:
    before = time.time_ns() // 1_000_000
    first = new_trace_id()
    time.sleep(0.003)
    second = new_trace_id()
    after = time.time_ns() // 1_000_000
    for trace_id in (first, second):
        assert re.fullmatch(r"[0-9a-f]{32}", trace_id)
        assert before <= int(trace_id[:12], 16) <= after
    assert first < second


def test_ids_are_unique_and_never_zero() -> None:
    traces = {new_trace_id() for _ in range(20_000)}
    spans = {new_span_id() for _ in range(20_000)}
    assert len(traces) == len(spans) == 20_000
    assert all(re.fullmatch(r"[0-9a-f]{16}", s) and int(s, 16) for s in spans)


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, to the parent
        os.write(write, (new_span_id() + new_span_id()).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.waitpid(pid, 0)
    assert child != new_span_id() + new_span_id()
