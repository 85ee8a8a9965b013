"""paused_gc: collections off inside, the collector left as it was found, from several threads."""

from __future__ import annotations

import gc
import threading

import pytest

from pilothouse.server.gc_pause import paused_gc


def test_pauses_and_restores_even_on_error() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), paused_gc():
        assert not gc.isenabled()
        raise RuntimeError("boom")
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # a process that had turned it off keeps it off
    finally:
        gc.enable()


def test_overlapping_blocks_in_threads_leave_it_on() -> None:
    inside = threading.Barrier(2)
    first_done = threading.Event()

    def first() -> None:
        with paused_gc():
            inside.wait()
        first_done.set()

    def second() -> None:
        with paused_gc():
            inside.wait()
            first_done.wait()  # the first block ends while this one runs

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert gc.isenabled()
