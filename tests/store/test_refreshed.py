"""Refreshed: /health's values read at most once per TTL, and stale says when a read would block."""

from pilothouse.store.refreshed import Refreshed


def test_read_at_most_once_per_ttl() -> None:
    now = [100.0]
    reads: list[float] = []

    def read() -> int:
        reads.append(now[0])
        return len(reads)

    value = Refreshed(read, 1.0, clock=lambda: now[0])
    assert value.stale  # never read: get() would block
    assert value.get() == 1 and not value.stale
    now[0] += 0.9
    assert value.get() == 1 and not value.stale  # kept
    now[0] += 0.2
    assert value.stale and value.get() == 2  # read again, once
    assert len(reads) == 2


def test_a_none_value_is_kept_too() -> None:
    reads = []
    value: Refreshed[None] = Refreshed(lambda: reads.append(1), 60.0)
    assert value.get() is None and value.get() is None and not value.stale
    assert reads == [1]
