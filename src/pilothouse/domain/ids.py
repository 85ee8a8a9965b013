"""Trace and span ids for the traces Pilothouse starts itself (gateway calls, eval calls, the SDK).

A trace id begins with the time in milliseconds (48 bits) and ends with 80 random bits, like AWS
X-Ray's: ids made later sort later, so a write batch appends to the trace indexes instead of touching
one index page per trace (random ids make the writer's CPU per call grow with the tables;
``python benchmarks/gateway.py`` shows it). They stay unique, and random where samplers look (the low
64 bits). Ids need to be unique, not secret: a seeded PRNG is much cheaper than a system call.
"""

from __future__ import annotations

import os
import random
import time

_ids = random.Random(os.urandom(16))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(16)))  # no shared sequence after fork


def trace_id_int() -> int:
    """A time-ordered 128-bit trace id."""
    return (time.time_ns() // 1_000_000) << 80 | _ids.getrandbits(80)


def new_trace_id() -> str:
    """A time-ordered 128-bit trace id in hex."""
    return f"{trace_id_int():032x}"


def span_id_int() -> int:
    """A random 64-bit span id (never 0)."""
    return _ids.getrandbits(64) or 1


def new_span_id() -> str:
    """A random 64-bit span id in hex."""
    return f"{span_id_int():016x}"
