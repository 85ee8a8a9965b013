"""Large OTLP/JSON bodies decoded in a process of their own.

Parsing a JSON document holds the GIL from its first byte to its last: a few MiB of densely packed
attributes keep every other thread, the event loop included, waiting for hundreds of milliseconds.
A worker process parses such a body, checks it (``tracing.otlp_json.json_to_protobuf``) and hands back
protobuf, which the collector then checks with the C reader (without holding the GIL) and queues as
any protobuf export. The worker is started on the first large body, replaced after
:data:`TASKS_PER_WORKER` bodies (so that what one large document made it allocate is given back),
and stopped with the app. Small bodies never come here: a process hop costs more than they do.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from pilothouse.tracing.otlp import DecodeLimits
from pilothouse.tracing.otlp_json import json_to_protobuf

TASKS_PER_WORKER = 64


class JsonDecoder:
    """One worker process for large OTLP/JSON bodies, started when first needed."""

    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    async def to_protobuf(self, body: bytes, limits: DecodeLimits) -> tuple[bytes, int, str | None]:
        """``json_to_protobuf(body, limits)`` in the worker (its errors are raised here)."""
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),  # never fork a threaded server
                max_tasks_per_child=TASKS_PER_WORKER,
            )
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, json_to_protobuf, body, limits)

    def close(self) -> None:
        """Stop the worker, if it was started."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
