"""The server's allocator settings: large request bodies reuse heap memory."""

from __future__ import annotations

import os
import resource

import pytest

from pilothouse.server.memory import tune_malloc

BODY = 1_400_000  # an export of 500 LLM spans


def _faults_of_exports(rounds: int, held: int = 20) -> int:
    """Page faults while ``held`` bodies are received (queued together), then freed, ``rounds`` times."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        queued = [b"\x01" * BODY for _ in range(held)]  # written through: every page is touched
        del queued
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not hasattr(os, "confstr") or not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only")
def test_queued_bodies_reuse_the_heap_instead_of_faulting_in_fresh_pages() -> None:
    pages_per_round = 20 * BODY // resource.getpagesize()
    assert tune_malloc()
    _faults_of_exports(1)  # the heap grows once
    # Without the settings glibc trims the freed heap top each round: ~5 x 6,800 faults here.
    assert _faults_of_exports(5) < pages_per_round // 10
