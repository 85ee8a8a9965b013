"""Pausing the garbage collector around work whose objects all live until it ends."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """No automatic collections inside the block (a batch being stored, a dashboard being built):
    every object it makes lives until it ends, so a collection meanwhile frees nothing and walks
    them all again. Cycles made meanwhile, in any thread, are collected once it is back on. Safe
    from several threads at once: a block leaves the collector as it found it, and the one that
    found it on turns it back on."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
