"""A background job that one process at a time runs, under a row of ``worker_leases``: the loop every
such job (monitors, canaries, retention) needs, written once, and the lease table's methods
(:class:`Leases`). The job's pass takes the lease itself; the loop runs the passes and gives the lease
up at the end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from pilothouse.store import tables as t

if TYPE_CHECKING:
    from pilothouse.store.sql import SqlStore

log = logging.getLogger("pilothouse.jobs")


class Leases:
    """The ``worker_leases`` table: which process holds which background job, until when."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.engine = store.engine

    def take_lease(self, name: str, holder: str, now_ns: int, ttl_ns: int) -> bool:
        """Hold the job ``name`` until ``now_ns + ttl_ns``: True when this holder has it (it was free,
        expired or already this holder's), False while another holder's lease runs."""
        lease = t.worker_leases.c
        with self.engine.begin() as conn:
            taken = conn.execute(
                update(t.worker_leases)
                .where(lease.name == name, (lease.holder == holder) | (lease.expires_ns <= now_ns))
                .values(holder=holder, expires_ns=now_ns + ttl_ns)
            ).rowcount
        if taken:
            return True
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(t.worker_leases).values(name=name, holder=holder, expires_ns=now_ns + ttl_ns)
                )
        except IntegrityError:
            return False  # another holder has it (or took it first just now)
        return True

    def lease(self, name: str) -> tuple[str, int] | None:
        """Who holds the job ``name`` and until when (None: nobody has taken it yet)."""
        lease = t.worker_leases.c
        with self.engine.connect() as conn:
            row = conn.execute(select(lease.holder, lease.expires_ns).where(lease.name == name)).first()
        return None if row is None else (row.holder, row.expires_ns)

    def release_lease(self, name: str, holder: str) -> None:
        """Give the job up (at shutdown), so that another process need not wait for the lease to expire."""
        lease = t.worker_leases.c
        with self.engine.begin() as conn:
            conn.execute(delete(t.worker_leases).where(lease.name == name, lease.holder == holder))


class LeasedLoop:
    """Runs ``run_once`` every ``interval_s`` (first at start when ``first_at_start``) until
    :meth:`close`, which also calls ``release`` (blocking: in a thread) so another process takes the job
    at once. A failed pass is logged and the next one tries again."""

    def __init__(
        self,
        name: str,
        run_once: Callable[[], Awaitable[object]],
        release: Callable[[], None],
        interval_s: float,
        *,
        first_at_start: bool = False,
    ) -> None:
        self.name = name
        self.run_once = run_once
        self.release = release
        self.interval_s = interval_s
        self.first_at_start = first_at_start
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop on the running event loop."""

        async def loop() -> None:
            if not self.first_at_start:
                await asyncio.sleep(self.interval_s)
            while True:
                try:
                    await self.run_once()
                except Exception:
                    log.warning("a %s pass failed; the next one tries again", self.name, exc_info=True)
                await asyncio.sleep(self.interval_s)

        self._task = asyncio.get_running_loop().create_task(loop())

    async def close(self) -> None:
        """Stop the loop and give the lease up (it expires by itself when that fails)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            await asyncio.to_thread(self.release)
        except Exception:
            log.warning("releasing the %s lease failed; it expires by itself", self.name, exc_info=True)
