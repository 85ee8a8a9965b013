"""The prompt registry's speed, each figure next to a baseline measured in the same run:

1. an SDK cache hit (``PromptClient.get`` of a fetched prompt) against a bare dict lookup of the same key;
2. a gateway call with a prompt reference against the same call with its messages inline (one server);
3. how long a label move takes to reach another server process (the database poll without Redis, the
   Redis push with it), against the process that moved it.

    python benchmarks/prompts.py [--moves 20] [--redis redis://127.0.0.1:6379/0 --pg postgresql://...]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from pilothouse.domain.keys import Scope
from pilothouse.prompts import PromptClient, PromptRegistry
from pilothouse.store.sql import SqlStore
from pilothouse.testing import PilothouseServer

CONFIG = "models:\n  - {name: echo, provider: sim, model: echo-1, options: {echo: true}}\n"


def seed(url: str, versions: int = 2) -> str:
    store = SqlStore.from_url(url)
    try:
        registry = PromptRegistry(store)
        for n in range(1, versions + 1):
            registry.create(
                "default",
                "greet",
                {"prompt": f"V{n} {{{{who}}}}", "model": "echo"},
                actor="bench",
                labels=["production"] if n == 1 else [],
            )
        _, key = store.create_api_key("default", "bench", frozenset({Scope.ADMIN, Scope.READ, Scope.GATEWAY}))
    finally:
        store.close()
    return key


def per_call_ns(fn: object, calls: int, rounds: int = 7) -> list[float]:
    """Nanoseconds per call of ``fn()`` in each of ``rounds`` timed loops."""
    call = fn  # type: ignore[assignment]
    out = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        for _ in range(calls):
            call()  # type: ignore[operator]
        out.append((time.perf_counter_ns() - started) / calls)
    return out


def sdk_cache_hit(server: PilothouseServer, key: str) -> None:
    client = PromptClient(server.base_url, key, cache_seconds=3600)
    client.get("greet")
    cache = {("greet", "production", None): object()}
    hit = per_call_ns(lambda: client.get("greet"), 200_000)
    bare = per_call_ns(lambda: cache.get(("greet", "production", None)), 200_000)
    print(f"SDK cache hit        median {statistics.median(hit):7.0f} ns/call (min {min(hit):.0f})")
    print(f"  baseline dict.get  median {statistics.median(bare):7.0f} ns/call (min {min(bare):.0f})")
    client.close()


def gateway_reference(server: PilothouseServer, key: str, n: int = 300) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    ref = {"prompt": {"name": "greet", "variables": {"who": "you"}}}
    inline = {"model": "echo", "messages": [{"role": "user", "content": "V1 you"}]}
    with httpx.Client(base_url=server.base_url, headers=headers) as http:
        timings: dict[str, list[float]] = {"reference": [], "inline": []}
        for _ in range(n):
            for name, body in (("reference", ref), ("inline", inline)):
                started = time.perf_counter()
                response = http.post("/v1/chat/completions", json=body)
                timings[name].append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, response.text
    for name, values in timings.items():
        values.sort()
        label = "gateway, prompt reference" if name == "reference" else "  baseline, inline messages"
        print(
            f"{label:28s} p50 {values[len(values) // 2]:.2f} ms  p99 {values[int(len(values) * 0.99)]:.2f} ms"
        )


def propagation(url: str, env: dict[str, str], moves: int, what: str) -> None:
    key = seed(url)
    folder = Path(tempfile.mkdtemp())
    (folder / "m.yaml").write_text(CONFIG)
    args = ["--config", str(folder / "m.yaml")]
    headers = {"Authorization": f"Bearer {key}"}
    body = {"prompt": {"name": "greet", "variables": {"who": "x"}}}
    rng = random.Random(7)
    here: list[float] = []
    there: list[float] = []
    with (
        PilothouseServer(url, args=args, env=env) as one,
        PilothouseServer(url, args=args, env=env) as two,
        httpx.Client(headers=headers) as http,
    ):
        for move in range(moves):
            version = 2 if move % 2 == 0 else 1
            expected = f"V{version} x"
            http.post(f"{two.base_url}/v1/chat/completions", json=body)  # cached in the other process
            time.sleep(rng.uniform(0, 0.6))  # no phase lock with the other process's poll
            started = time.perf_counter()
            http.post(
                f"{one.base_url}/api/prompts/greet/labels",
                json={"label": "production", "version": version},
            )
            for server, sink in ((one, here), (two, there)):
                while True:
                    answer = http.post(f"{server.base_url}/v1/chat/completions", json=body).json()
                    if answer["choices"][0]["message"]["content"] == expected:
                        sink.append((time.perf_counter() - started) * 1000)
                        break
    for label, values in (
        (f"label move, other process ({what})", there),
        ("  baseline, the moving process", here),
    ):
        values.sort()
        print(
            f"{label:44s} p50 {values[len(values) // 2]:7.1f} ms  max {values[-1]:7.1f} ms  (n={len(values)})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--redis", default=None, help="Redis URL: also measure the push")
    parser.add_argument("--pg", default=None, help="PostgreSQL URL (an empty database) for the Redis run")
    options = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs")
    folder = Path(tempfile.mkdtemp())
    url = f"sqlite:///{folder / 'bench.db'}"
    key = seed(url)
    (folder / "m.yaml").write_text(CONFIG)
    with PilothouseServer(url, args=["--config", str(folder / "m.yaml")]) as server:
        sdk_cache_hit(server, key)
        gateway_reference(server, key)
    propagation(f"sqlite:///{folder / 'poll.db'}", {}, options.moves, "database poll, 0.5 s")
    if options.redis and options.pg:
        env = {"PILOTHOUSE_REDIS_URL": options.redis}
        propagation(options.pg, env, options.moves, "Redis push")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
