"""Issue 21 class 13: the caches' figures are per project: the exact cache's entry count and the
semantic cache's entries, hits, misses and re-checks (a bag-of-letters embedder stands in for the
sentence model: the cache takes any embedder)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

from pilothouse.config import CacheSettings, SemanticCacheSettings
from pilothouse.gateway.cache import CachedAnswer, LocalResponseCache, cache_key
from pilothouse.gateway.semantic_cache import SemanticCache


def letters(texts: list[str]) -> Sequence[Sequence[float]]:
    vectors = []
    for text in texts:
        counts = [float(text.lower().count(c)) for c in "abcdefghijklmnopqrstuvwxyz"]
        norm = math.sqrt(sum(x * x for x in counts)) or 1.0
        vectors.append([x / norm for x in counts])
    return vectors


ANSWER = CachedAnswer({"choices": [{"message": {"content": "Paris"}}]}, "sim", "sim/sim-1@default", None)


def _request(text: str) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


def test_exact_cache_counts_entries_per_project() -> None:
    cache = LocalResponseCache(CacheSettings(enabled=True, max_entries=3))

    async def fill() -> None:
        for n in range(2):
            await cache.set(cache_key("p1", _request(f"q{n}")), ANSWER)
        await cache.set(cache_key("p1", _request("q0")), ANSWER)  # the same key again
        await cache.set(cache_key("p2", _request("q0")), ANSWER)
        assert (cache.entries_of("p1"), cache.entries_of("p2")) == (2, 1)
        await cache.set(cache_key("p2", _request("q9")), ANSWER)  # evicts p1's oldest
        assert (cache.entries_of("p1"), cache.entries_of("p2"), len(cache)) == (1, 2, 3)

    asyncio.run(fill())


def test_semantic_cache_reports_each_project_its_own_figures() -> None:
    cache = SemanticCache(SemanticCacheSettings(enabled=True, threshold=0.9), letters)

    async def use() -> None:
        first = await cache.lookup("p1", _request("capital of france"))
        assert first is not None and first.answer is None
        cache.add(first, ANSWER)
        hit = await cache.lookup("p1", _request("capital of france?"))
        assert hit is not None and hit.answer is not None
        await cache.record_verification("m", "Paris", "Paris", hit.project_id)
        other = await cache.lookup("p2", _request("capital of france"))
        assert other is not None and other.answer is None  # another project's scope

    asyncio.run(use())
    mine, theirs = cache.report("p1"), cache.report("p2")
    assert mine["entries"] == 1 and theirs["entries"] == 0
    assert mine["routes"]["m"] == {
        "hits": 1, "misses": 1, "verified": 1, "agreed": 1, "precision": 1.0, "enabled": True,
    }  # fmt: skip
    assert theirs["routes"]["m"]["hits"] == 0 and theirs["routes"]["m"]["misses"] == 1
    assert theirs["routes"]["m"]["verified"] == 0
    assert cache.report("p3")["routes"] == {}
