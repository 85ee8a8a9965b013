"""Memory-allocator settings for the server process.

Trace exports arrive as request bodies of a megabyte or more, each read in chunks of up to 256 KB. glibc
serves blocks that large with a fresh mmap and returns them on free (or trims the heap top it grew for
them), so every export faulted its pages in anew, on the request path. Keeping such blocks in the heap
(allocations up to 32 MB come from it, and up to 256 MB of free heap top is kept) makes them reusable.
The cost: after a burst the process may keep up to 256 MB it freed per heap (the main one and each
thread's). Nothing changes where the C library is not glibc. These are settings, not an accelerator:
there is no other implementation to test against. tests/server/test_memory.py checks that they save
the page faults; ``python benchmarks/ingest.py`` measures the server's CPU per span.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger("pilothouse.server")

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 256 * 1024 * 1024
_SETTINGS = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def tune_malloc() -> bool:
    """Apply the settings above (glibc only); True when they took effect."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):  # "glibc 2.36"; musl and others have none
            return False
    except (AttributeError, ValueError, OSError):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = all([mallopt(param, value) == 1 for param, value in _SETTINGS])  # each one tried
    if not done:
        log.debug("mallopt refused the server's allocator settings")
    return done
