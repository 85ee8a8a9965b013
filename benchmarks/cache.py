"""Response cache benchmark: what a cache hit adds, with 100,000 entries in the cache.

    python benchmarks/cache.py [--entries 100000] [--lookups 20000] [--requests 2000]

1. Lookup cost: the key (SHA-256 of the normalised request) plus a get from a cache holding
   --entries answers, in process and in Redis (when 127.0.0.1:6379 answers), p50 and p99.
2. End to end on loopback: a real `pilothouse serve` with the cache on and --entries answers stored,
   p50/p99 of a cache hit against the same request with the cache off calling a 0 ms simulated
   upstream (the baseline: the cheapest possible upstream call), requests alternating.
3. The semantic cache: embedding the question plus the similarity search over 10,000 and --entries
   answers in one scope.
Target (issue 4): the lookup adds <= 1 ms p50 on a hit with 100,000 entries ((1), both stores); (2)
shows what a client sees: a hit against the fastest possible upstream call.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import create_key

from pilothouse.domain.money import Money
from pilothouse.gateway.cache import (
    CachedAnswer,
    CacheSettings,
    LocalResponseCache,
    RedisResponseCache,
    cache_key,
)
from pilothouse.testing import PilothouseServer, SimulatedUpstream

ANSWER = {
    "id": "chatcmpl-x",
    "object": "chat.completion",
    "model": "sim-1",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "word " * 40}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 30, "completion_tokens": 40, "total_tokens": 70},
}


def request(i: int) -> dict[str, object]:
    return {
        "model": "sim",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
            {"role": "user", "content": f"Question number {i}: what is the capital of country {i}?"},
        ],
        "temperature": 0,
        "max_tokens": 64,
    }


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def lookups(cache: LocalResponseCache | RedisResponseCache, entries: int, count: int) -> list[float]:
    answer = CachedAnswer(ANSWER, "sim", "sim/sim-1@default", Money.from_usd("0.0001"))
    batch = 1000
    for start in range(0, entries, batch):
        await asyncio.gather(
            *(cache.set(cache_key("p", request(i)), answer) for i in range(start, start + batch))
        )
    times = []
    for n in range(count):
        body = request((n * 7919) % entries)
        t0 = time.perf_counter()
        found = await cache.get(cache_key("p", body))
        times.append((time.perf_counter() - t0) * 1e3)
        assert found is not None
    return times


def measure_lookups(entries: int, count: int) -> None:
    settings = CacheSettings(enabled=True, ttl_s=3600, max_entries=entries)
    local = asyncio.run(lookups(LocalResponseCache(settings), entries, count))
    print(
        f"lookup, in process, {entries:,} entries: p50 {pct(local, 0.5) * 1000:.1f} us, "
        f"p99 {pct(local, 0.99) * 1000:.1f} us"
    )
    try:
        import redis

        redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=1).ping()
    except Exception as exc:
        print(f"lookup, Redis: skipped ({exc})")
        return

    async def in_redis() -> list[float]:
        cache = RedisResponseCache("redis://127.0.0.1:6379/0", settings, prefix=f"bench:{os.getpid()}")
        try:
            return await lookups(cache, entries, count)
        finally:
            await cache.close()

    remote = asyncio.run(in_redis())
    print(
        f"lookup, Redis, {entries:,} entries: p50 {pct(remote, 0.5):.3f} ms, p99 {pct(remote, 0.99):.3f} ms"
    )


def measure_semantic(entries: int, count: int = 200) -> None:
    """A semantic lookup: embed the question (all-MiniLM-L6-v2, in process) and search one scope of
    ``entries`` answers (filled with random unit vectors: embedding 100k real questions takes minutes)."""
    import numpy as np

    from pilothouse.gateway.semantic_cache import SemanticCache, SemanticCacheSettings, local_embedder

    settings = SemanticCacheSettings(enabled=True, max_entries=entries)
    cache = SemanticCache(settings, local_embedder(settings.model))
    cache.warm_up()
    body = request(0)
    first = asyncio.run(cache.lookup("p", body))
    assert first is not None
    rng = np.random.default_rng(0)
    filler = rng.standard_normal((entries, first.vector.shape[0])).astype(np.float32)
    filler /= np.linalg.norm(filler, axis=1, keepdims=True)
    answer = CachedAnswer(ANSWER, "sim", "sim/sim-1@default", Money.from_usd("0.0001"))
    cache.add(first, answer)
    scope = cache._scopes[first.scope]
    scope.vectors = filler
    scope.answers = [answer] * entries
    scope.expiries = [time.monotonic() + 3600] * entries
    times, search = [], []
    for n in range(count):
        t0 = time.perf_counter()
        asyncio.run(cache.lookup("p", request(n)))
        times.append((time.perf_counter() - t0) * 1e3)
        t0 = time.perf_counter()
        int(np.argmax(scope.vectors @ first.vector))
        search.append((time.perf_counter() - t0) * 1e3)
    print(
        f"semantic lookup, {entries:,} entries in one scope: p50 {pct(times, 0.5):.2f} ms "
        f"(of which the similarity search {pct(search, 0.5):.2f} ms), p99 {pct(times, 0.99):.2f} ms"
    )


def post(conn: http.client.HTTPConnection, body: bytes, headers: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    return (time.perf_counter() - t0) * 1e3, response.headers.get("x-pilothouse-cache", "")


def measure_end_to_end(entries: int, requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, SimulatedUpstream() as upstream:
        config = Path(tmp) / "cache.yaml"
        model = f'{{name: sim, provider: openai, model: sim-1, base_url: "{upstream.base_url}/v1"}}'
        config.write_text(f"models:\n  - {model}\ncache: {{enabled: true, max_entries: {entries}}}\n")
        url = f"sqlite:///{tmp}/cache.db"
        key = create_key(url)
        with PilothouseServer(url, args=["--config", str(config)]) as server:
            conn = http.client.HTTPConnection("127.0.0.1", server.port)
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            started = time.perf_counter()
            for i in range(entries):
                post(conn, json.dumps(request(i)).encode(), headers)
            print(f"filled the cache with {entries:,} answers in {time.perf_counter() - started:.0f} s")
            hits, misses = [], []
            off = {**headers, "x-pilothouse-cache": "off"}
            for n in range(requests):
                body = json.dumps(request((n * 7919) % entries)).encode()
                took, outcome = post(conn, body, headers)
                assert outcome == "hit", outcome
                hits.append(took)
                took, outcome = post(conn, body, off)
                misses.append(took)
            print(
                f"end to end, hit:                     p50 {statistics.median(hits):.3f} ms, "
                f"p99 {pct(hits, 0.99):.3f} ms"
            )
            print(
                f"end to end, cache off, 0 ms upstream: p50 {statistics.median(misses):.3f} ms, "
                f"p99 {pct(misses, 0.99):.3f} ms"
            )
            print(f"ratio hit/upstream p50: {statistics.median(hits) / statistics.median(misses):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=2_000)
    args = parser.parse_args()
    measure_lookups(args.entries, args.lookups)
    measure_semantic(10_000)
    measure_semantic(args.entries)
    measure_end_to_end(args.entries, args.requests)


if __name__ == "__main__":
    main()
