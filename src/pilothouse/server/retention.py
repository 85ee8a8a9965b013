"""The retention job: every ``interval_s`` the one process holding the ``retention`` lease (a row of
``worker_leases``, as the monitors' job takes) deletes each project's traces older than its
``retention_days``, and on PostgreSQL creates the span partitions of the days ahead and drops whole
partitions past retention (:mod:`pilothouse.store.partitions`). Off the request path: the deletes run
in a thread, in batches."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable

from pilothouse.store.leased_jobs import LeasedLoop, Leases
from pilothouse.store.partitions import ensure_ahead
from pilothouse.store.refreshed import Refreshed
from pilothouse.store.retention import LeaseLost, RetentionStore
from pilothouse.store.sql import SqlStore

log = logging.getLogger("pilothouse.retention")

LEASE_NAME = "retention"
DISK_CACHE_S = 30.0  # /health reads the database's size at most this often


def disk_size(store: SqlStore) -> Refreshed[int]:
    """The database's size on disk for /health and the web UI, read at most every 30 s: every process
    reports it, whether or not it runs the retention job (``retention_interval_s: 0``)."""
    return Refreshed(RetentionStore(store).disk_bytes, DISK_CACHE_S)


class RetentionWorker:
    """Applies the projects' retention, in whichever process holds the lease."""

    def __init__(
        self,
        store: SqlStore,
        *,
        interval_s: float = 3600.0,
        clock: Callable[[], int] = time.time_ns,
        batch_traces: int = 1000,
    ) -> None:
        self.retention = RetentionStore(store)
        self.leases = Leases(store)
        self.interval_s = interval_s
        self.batch_traces = batch_traces  # traces deleted per transaction, the lease renewed before each
        self.clock = clock
        self.holder = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.passes = 0  # passes this process ran (holding the lease)
        self.deleted = 0  # traces this process deleted
        self._loop = LeasedLoop(
            "retention",
            lambda: asyncio.to_thread(self.run_once),
            lambda: self.leases.release_lease(LEASE_NAME, self.holder),
            interval_s,
            first_at_start=True,
        )

    def run_once(self) -> dict[str, int] | None:
        """One pass (blocking): traces deleted per project, or None when another process holds the job."""
        now_ns = self.clock()
        ttl_ns = int(max(600.0, 3 * self.interval_s) * 1e9)
        if not self.leases.take_lease(LEASE_NAME, self.holder, now_ns, ttl_ns):
            return None
        for name in ensure_ahead(self.retention.engine, now_ns):
            log.info("retention: created the span partition %s", name)
        try:  # the lease renewed before each batch of deletes: a long pass keeps it, or stops
            done = self.retention.expire(
                now_ns,
                self.batch_traces,
                still_held=lambda: self.leases.take_lease(LEASE_NAME, self.holder, self.clock(), ttl_ns),
            )
        except LeaseLost:
            log.warning("the retention lease passed to another process during a pass; it goes on there")
            return None
        for name in self.retention.dropped_partitions:
            log.info("retention: dropped the span partition %s (all of it past retention)", name)
        self.passes += 1
        self.deleted += sum(done.values())
        for project_id, count in done.items():
            log.info("retention: deleted %d traces of project %s", count, project_id)
        return done

    def start(self) -> None:
        """A pass now and then every ``interval_s``, in the background, until :meth:`close`."""
        self._loop.start()

    async def close(self) -> None:
        """Stop and give the lease up (another process takes the job at its next pass)."""
        await self._loop.close()
