"""``pilothouse serve --workers N``: several processes on one port, sharing PostgreSQL and Redis, and a
second server on another port beside them. Requests spread over the workers, one rate limit and one
budget hold across all of them, Responses API answers stored by one are continued by another, and the
background jobs (monitors, retention) each run in one process only."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.gateway.test_limits import _start_of_a_minute
from tests.server.process import ServerProcess, cli

REDIS_URL = os.environ.get("PILOTHOUSE_TEST_REDIS", "redis://127.0.0.1:6379/0")
MESSAGES = [{"role": "user", "content": "hi"}]
# $1,000 per 1M output tokens and 50 tokens a call: every call costs its worst case, $0.05
PRICEY = {
    "name": "pricey",
    "provider": "sim",
    "model": "pricey-1",
    "options": {"output_tokens": 50, "latency_ms": 300},
    "price": {"input": 0, "output": 1000},
}

pytestmark = pytest.mark.slow


@pytest.fixture
def redis_url() -> str:
    import redis

    try:
        redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"Redis is required in CI and is not reachable: {exc}")
        pytest.skip(f"Redis not reachable: {exc}")
    return REDIS_URL


def _health_by_pid(base_url: str, want: int, tries: int = 400) -> dict[int, dict[str, object]]:
    """/health from each process behind ``base_url``: a fresh connection each time, so the kernel
    hands each one to whichever worker accepts it, until ``want`` processes answered."""
    seen: dict[int, dict[str, object]] = {}
    for _ in range(tries):
        body = httpx.get(base_url + "/health", headers={"Connection": "close"}, timeout=5).json()
        seen[int(body["pid"])] = body
        if len(seen) >= want:
            break
    return seen


def test_workers_and_a_second_server_share_limits_and_run_jobs_once(
    tmp_path: Path, pg_server: str, redis_url: str
) -> None:
    key = (
        cli("keys", "create", "--name", "workers", "--rpm", "12", "--database-url", pg_server)
        .stdout.strip()
        .splitlines()[-1]
    )
    budgeted = (
        cli("keys", "create", "--name", "spender", "--budget-usd", "1.00", "--budget-period", "total",
            "--database-url", pg_server)
        .stdout.strip()
        .splitlines()[-1]
    )  # fmt: skip
    talker = (
        cli("keys", "create", "--name", "talker", "--database-url", pg_server).stdout.strip().splitlines()[-1]
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"models": [{"name": "sim", "provider": "sim", "model": "sim"}, PRICEY]})
    )
    env = {
        "PILOTHOUSE_REDIS_URL": redis_url,
        "PILOTHOUSE_HOME": str(tmp_path),
        "PILOTHOUSE_MONITOR_INTERVAL_S": "0.2",
        "PILOTHOUSE_RETENTION_INTERVAL_S": "0.2",
    }
    args = ("--config", str(config))
    with (
        ServerProcess(pg_server, args=(*args, "--workers", "2"), env=env) as pair,
        ServerProcess(pg_server, args=(*args, "--workers", "1"), env=env) as single,
    ):
        workers = _health_by_pid(pair.base_url, 2)
        assert len(workers) == 2, "the kernel handed every connection to one worker"
        assert pair.pid not in workers  # the parent supervises; the workers answer

        async def burst(secret: str, model: str, count: int) -> list[int]:
            async with httpx.AsyncClient(headers={"Authorization": f"Bearer {secret}"}, timeout=30) as http:
                calls = [
                    http.post(
                        f"{server.base_url}/v1/chat/completions",
                        json={"model": model, "messages": MESSAGES, "max_tokens": 50},
                        headers={"Connection": "close"},  # new connections: spread over the workers
                    )
                    for server in (pair, single) * (count // 2)
                ]
                return [r.status_code for r in await asyncio.gather(*calls)]

        # a $1.00 budget, each call holding its $0.05 worst case while in flight: exactly 20 of 30
        spent = asyncio.run(burst(budgeted, "pricey", 30))
        assert spent.count(200) == 20 and spent.count(429) == 10, spent

        # a Responses API answer stored by one process is continued, read and deleted through others
        talk = {"Authorization": f"Bearer {talker}"}
        first = httpx.post(
            f"{pair.base_url}/v1/responses", json={"model": "sim", "input": "hi"}, headers=talk
        )
        assert first.status_code == 200, first.text
        first_id = first.json()["id"]
        with httpx.stream(
            "POST",
            f"{single.base_url}/v1/responses",
            json={"model": "sim", "input": "more", "previous_response_id": first_id, "stream": True},
            headers=talk,
        ) as streamed:
            events = [line for line in streamed.iter_lines() if line.startswith("data: ")]
        second_id = json.loads(events[-1][6:])["response"]["id"]
        follow = {"model": "sim", "input": "again", "previous_response_id": second_id}
        assert httpx.post(f"{pair.base_url}/v1/responses", json=follow, headers=talk).status_code == 200
        assert httpx.get(f"{single.base_url}/v1/responses/{first_id}", headers=talk).json()["id"] == first_id
        assert httpx.delete(f"{pair.base_url}/v1/responses/{first_id}", headers=talk).status_code == 200
        assert httpx.get(f"{single.base_url}/v1/responses/{first_id}", headers=talk).status_code == 404

        _start_of_a_minute()
        statuses = asyncio.run(burst(key, "sim", 36))
        # 36 requests over three processes: exactly 12 admitted
        assert statuses.count(200) == 12, statuses
        assert statuses.count(429) == 36 - statuses.count(200)

        time.sleep(1.5)  # several monitor intervals
        processes = {**_health_by_pid(pair.base_url, 2), **_health_by_pid(single.base_url, 1)}
        assert len(processes) == 3
        for job in ("monitors", "retention"):
            passes = {pid: body["jobs"][job] for pid, body in processes.items()}  # type: ignore[index]
            running = [pid for pid, count in passes.items() if count]
            assert len(running) == 1, (job, passes)  # one lease holder among the three processes
            assert passes[running[0]] >= 3
        assert all(int(body["disk_bytes"]) > 0 for body in processes.values())  # type: ignore[call-overload]

    assert pair.proc.returncode == 0  # SIGTERM to the parent stops its workers, and then the parent
    for pid in workers:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
