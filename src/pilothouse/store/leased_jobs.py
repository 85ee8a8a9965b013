"""A background job that one process at a time runs, under a row of ``worker_leases``: the loop every
such job (monitors, canaries, retention) needs, written once. The job's pass takes the lease itself
(``MonitorStore.take_lease``); this runs the passes and gives the lease up at the end."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("pilothouse.jobs")


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
