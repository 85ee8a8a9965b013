"""What the money hardening (issue 21, classes 5-6) costs per gateway call, in CPU.

    python benchmarks/money_checks.py [--calls 200000]

Reading an upstream's answer: checking a chat completion's shape (``check_chat_answer``) and reading its
usage with bounded token counts (``checked_usage_from_openai``), against the baseline in the same run:
the previous read (``usage_from_openai`` as it was: ``int()`` of each count, no check). Microseconds per
call, the median of 5 rounds each, alternating. The gateway's budget per call is tens of microseconds
(docs/performance.md); the checks should add well under one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pilothouse.domain.traces import Usage
from pilothouse.gateway._answers import check_chat_answer
from pilothouse.gateway.recording import checked_usage_from_openai

RESPONSE: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."}, "finish_reason": "stop"}],
    "usage": {
        "prompt_tokens": 120,
        "completion_tokens": 12,
        "total_tokens": 132,
        "prompt_tokens_details": {"cached_tokens": 64},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}


def previous_read(usage: dict[str, Any]) -> Usage:
    """The usage read before the hardening (the previous ``usage_from_openai``, verbatim): int() of
    each count, no check. The baseline."""
    prompt = int(usage.get("prompt_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    cached = int(details.get("cached_tokens") or 0)
    written = int(details.get("cache_write_tokens") or 0)
    return Usage(
        input=max(0, prompt - cached - written),
        output=int(usage.get("completion_tokens") or 0),
        cache_read=cached,
        cache_write=written,
        reasoning=int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0),
    )


def hardened_read(response: dict[str, Any]) -> Any:
    return checked_usage_from_openai(check_chat_answer(response).get("usage"))


def per_call_us(calls: int) -> tuple[float, float]:
    """(before, after): microseconds per call, the median of 5 alternating rounds each."""
    rounds: dict[str, list[float]] = {"before": [], "after": []}
    for _ in range(5):
        for name, func, arg in (
            ("before", previous_read, RESPONSE["usage"]),
            ("after", hardened_read, RESPONSE),
        ):
            start = time.perf_counter()
            for _ in range(calls):
                func(arg)
            rounds[name].append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(rounds["before"]), statistics.median(rounds["after"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()
    before, after = per_call_us(args.calls)
    print(f"reading an answer's usage: {before:.2f} us before (the previous read, baseline),")
    print(f"  {after:.2f} us with the shape check and bounded counts (+{after - before:.2f} us per call)")


if __name__ == "__main__":
    main()
