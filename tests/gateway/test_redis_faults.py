"""Redis faults degrade cleanly (issue 21, class 7): while the Redis of shared limits, budgets and the
cache is gone, calls that need it get 503 ``redis_unavailable`` in the surface's shape (or go on, for a
feature configured to fail open), ``/health`` says degraded, and a Redis that comes back empty has its
budget ledgers seeded from the database before they are used. Each test runs its own redis-server on a
spare port and stops it (the shared one on 6379 is never touched)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pilothouse.domain.budgets import BudgetPeriod, BudgetScope
from pilothouse.domain.money import Money
from pilothouse.gateway.budgets import LedgerEntry, RedisBudgetLedger
from pilothouse.store.costs import CostStore
from pilothouse.store.sql import SqlStore
from pilothouse.testing import free_port
from tests.conftest import sqlite_at_head
from tests.gateway.test_limits import redis_url  # noqa: F401  (fixture)
from tests.server.inprocess import InProcessServer
from tests.ui.conftest import login

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "user", "content": "hello there"}]
# $1,000 per 1M output tokens, 50 tokens: every call costs its worst case, $0.05
MODELS = [
    {
        "name": "pricey",
        "provider": "sim",
        "model": "pricey-1",
        "options": {"output_tokens": 50},
        "price": {"input": 0, "output": 1000},
    }
]


class OwnRedis:
    """A redis-server of this test's own, on a spare port, that it may stop and start (empty)."""

    def __init__(self, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed")
        self.binary, self.folder = binary, folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.process = subprocess.Popen(
            [self.binary, *args, "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        for _ in range(200):
            try:
                redis.from_url(self.url, socket_connect_timeout=0.2).ping()
                return
            except redis.RedisError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    yield server
    server.stop()


def _config(tmp_path: Path, cache: bool = False) -> Path:
    path = tmp_path / "redis-faults.yaml"
    path.write_text(yaml.safe_dump({"models": MODELS, "cache": {"enabled": cache}}))
    return path


def _with_budget(url: str, limit_usd: str) -> None:
    store = SqlStore.from_url(url)
    try:
        CostStore(store).create_budget(
            "default", BudgetScope.PROJECT, "", BudgetPeriod.TOTAL, Money.from_usd(limit_usd)
        )
    finally:
        store.close()


def _chat(server: InProcessServer, key: str, content: str = "hello there") -> httpx.Response:
    return httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": "pricey", "messages": [{"role": "user", "content": content}], "max_tokens": 50},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def _health(server: InProcessServer, status: str) -> dict[str, Any]:
    """``/health`` once it reports ``status`` (its Redis check is reused for a second)."""
    for _ in range(100):
        response = httpx.get(f"{server.base_url}/health")
        assert response.status_code == 200
        if response.json()["status"] == status:
            return dict(response.json())
        time.sleep(0.05)
    raise AssertionError(f"/health never said {status}: {response.json()}")


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "redis_unavailable"
    assert response.headers["retry-after"] == "1"


def test_redis_down_is_503_and_a_redis_back_empty_is_seeded_from_the_database(
    tmp_path: Path, own_redis: OwnRedis
) -> None:
    url = sqlite_at_head(tmp_path / "faults.db")
    _with_budget(url, "0.20")  # four calls
    own_redis.start()
    env = {"PILOTHOUSE_REDIS_URL": own_redis.url}
    with InProcessServer(url, home=tmp_path, config=_config(tmp_path), env=env) as server:
        key = server.create_key("plain")
        limited = server.create_key("limited", rpm=100)
        assert [_chat(server, key).status_code for _ in range(2)] == [200, 200]  # $0.10 spent
        for _ in range(100):  # both calls are stored (the ledgers will be seeded from the store)
            traces = httpx.get(f"{server.base_url}/api/traces", headers={"Authorization": f"Bearer {key}"})
            if len(traces.json()["data"]) == 2:
                break
            time.sleep(0.05)
        assert _health(server, "ok")["redis"] == "ok"

        own_redis.stop()
        health = _health(server, "degraded")
        assert health["redis"] == "unavailable" and "redis" in health["reasons"][0]
        _assert_unavailable(_chat(server, key))  # the budget cannot be held
        _assert_unavailable(_chat(server, limited))  # the rate limit cannot be counted
        anthropic = httpx.post(
            f"{server.base_url}/v1/messages",
            json={"model": "pricey", "max_tokens": 50, "messages": MESSAGES},
            headers={"Authorization": f"Bearer {key}"},
        )
        assert anthropic.status_code == 503
        assert anthropic.json()["type"] == "error" and anthropic.json()["error"]["type"] == "overloaded_error"
        budgets = httpx.get(f"{server.base_url}/api/budgets", headers={"Authorization": f"Bearer {key}"})
        assert budgets.status_code == 503 and budgets.json()["error"]["code"] == "redis_unavailable"
        with httpx.Client(base_url=server.base_url) as browser:  # the costs page shows the stored spend
            login(browser, key)
            page = browser.get("/costs")
            assert page.status_code == 200 and "$0.10" in page.text

        own_redis.start()  # back, and empty: the spend so far must come from the database
        _health(server, "ok")
        (budget,) = httpx.get(
            f"{server.base_url}/api/budgets", headers={"Authorization": f"Bearer {key}"}
        ).json()["data"]
        assert budget["spent_usd"] == pytest.approx(0.10)
        # before: the empty Redis counted from $0 and let four more calls through a $0.20 budget
        assert [_chat(server, key).status_code for _ in range(3)] == [200, 200, 429]
        assert _chat(server, limited).status_code == 429  # limits are back too (the budget is spent)


def test_fail_open_and_fail_closed_are_configurable(tmp_path: Path, own_redis: OwnRedis) -> None:
    url = sqlite_at_head(tmp_path / "open.db")
    _with_budget(url, "1.00")
    own_redis.start()
    open_env = {
        "PILOTHOUSE_REDIS_URL": own_redis.url,
        "PILOTHOUSE_BUDGETS_FAIL_OPEN": "true",
        "PILOTHOUSE_LIMITS_FAIL_OPEN": "true",
    }
    config = _config(tmp_path, cache=True)
    with InProcessServer(url, home=tmp_path, config=config, env=open_env) as server:
        key = server.create_key("limited", rpm=100)
        assert _chat(server, key).status_code == 200
        own_redis.stop()
        # limits, budgets and the cache (open by default) all fail open: the call is served
        response = _chat(server, key, "another question")
        assert response.status_code == 200, response.text
        assert response.headers["x-pilothouse-cache"] == "unavailable"
    own_redis.start()
    closed_env = {"PILOTHOUSE_REDIS_URL": own_redis.url, "PILOTHOUSE_CACHE_FAIL_OPEN": "false"}
    with InProcessServer(url, home=tmp_path, config=config, env=closed_env) as server:
        key = server.create_key("plain")
        own_redis.stop()
        _assert_unavailable(_chat(server, key))


def test_start_with_redis_down_and_budgets_is_a_degraded_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = sqlite_at_head(tmp_path / "down.db")
    _with_budget(url, "1.00")
    env = {"PILOTHOUSE_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}  # nothing listens there
    with (
        caplog.at_level(logging.WARNING),
        InProcessServer(url, home=tmp_path, config=_config(tmp_path), env=env) as server,
    ):
        key = server.create_key()
        assert _health(server, "degraded")["redis"] == "unavailable"
        _assert_unavailable(_chat(server, key))
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    assert any("Redis" in r.getMessage() and "seeded" in r.getMessage() for r in caplog.records)


def test_the_redis_ledger_is_seeded_never_lowered_and_never_counts_a_lost_entry_as_zero(
    redis_url: str,  # noqa: F811
) -> None:
    async def run() -> None:
        ledger = RedisBudgetLedger(redis_url, prefix=f"test:{uuid.uuid4().hex}")
        entry = LedgerEntry("b:0", Money.from_usd("1"))
        try:
            # not counted yet (a new period, or a Redis that lost it): no reservation, no settlement
            assert await ledger.reserve([entry], Money.from_usd("0.1"), "r1", 60) == -2
            assert await ledger.settle([entry], "r1", Money.from_usd("0.1")) == [(Money.ZERO, Money.ZERO)]
            assert await ledger.usage(entry.key) == (Money.ZERO, Money.ZERO)
            await ledger.ensure(entry.key, Money.from_usd("0.5"))
            await ledger.ensure(entry.key, Money.from_usd("0.2"))  # the database lags: never lowered
            assert (await ledger.usage(entry.key))[0] == Money.from_usd("0.5")
            await ledger.ensure(entry.key, Money.from_usd("0.7"))  # it has more: raised
            assert await ledger.reserve([entry], Money.from_usd("0.3"), "r2", 60) == -1
            assert await ledger.reserve([entry], Money.from_usd("0.01"), "r3", 60) == 0  # full
        finally:
            await ledger.close()

    asyncio.run(run())
