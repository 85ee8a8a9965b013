"""The server's allocator settings: queued request bodies reuse heap memory (measured in a child
process, so that the settings do not outlive the test)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CHILD = """
import resource, sys
from pilothouse.server.memory import tune_malloc

def faults(rounds):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        queued = [b"\\x01" * 1_400_000 for _ in range(20)]  # 20 exports of 500 spans, written through
        del queued
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

tuned = tune_malloc() if sys.argv[1] == "tuned" else None
faults(1)  # the heap grows once
print(tuned, faults(5))
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, check=True)
    tuned, faults = out.stdout.split()
    return tuned, int(faults)


@pytest.mark.slow  # child processes
@pytest.mark.skipif(not hasattr(os, "confstr") or not os.confstr("CS_GNU_LIBC_VERSION"), reason="glibc only")
def test_queued_bodies_reuse_the_heap_instead_of_faulting_in_fresh_pages() -> None:
    pages_per_round = 20 * 1_400_000 // os.sysconf("SC_PAGE_SIZE")
    _, untuned = _faults("default")
    tuned, faults = _faults("tuned")
    assert tuned == "True"
    assert untuned > 2 * pages_per_round  # glibc trims the freed heap top: fresh pages each round
    assert faults < pages_per_round // 10
