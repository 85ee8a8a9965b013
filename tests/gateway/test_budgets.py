"""Budgets enforced by reservation through real gateways: the race against two gateways
sharing Redis, clean 429 budget_exceeded errors, alerts to a webhook, spend in the API and reports."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.gateway.test_limits import redis_url  # noqa: F401  (fixture)
from tests.server.inprocess import InProcessServer
from tests.server.process import cli

pytestmark = pytest.mark.slow
MESSAGES = [{"role": "user", "content": "hello there"}]
# $1,000 per 1M output tokens = $0.001 a token; 50 tokens: every request costs its worst case, $0.05
MODELS = [
    {
        "name": "pricey",
        "provider": "sim",
        "model": "pricey-1",
        "options": {"output_tokens": 50, "latency_ms": 300},
        "price": {"input": 0, "output": 1000},
    }
]


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "budgets.yaml"
    path.write_text(yaml.safe_dump({"models": MODELS}))
    return path


async def _burst(servers: list[InProcessServer], key: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=30) as http:
        calls = [
            http.post(
                f"{servers[i % len(servers)].base_url}/v1/chat/completions",
                json={"model": "pricey", "messages": MESSAGES, "max_tokens": 50},
            )
            for i in range(count)
        ]
        return list(await asyncio.gather(*calls))


def _check_rejections(responses: list[httpx.Response]) -> None:
    for r in responses:
        if r.status_code != 200:
            assert r.status_code == 429, r.text
            error = r.json()["error"]
            assert error["code"] == "budget_exceeded" and "Budget exceeded" in error["message"]


def test_budget_race_two_gateways_sharing_redis(tmp_path: Path, redis_url: str) -> None:  # noqa: F811
    url = f"sqlite:///{tmp_path / 'race.db'}"
    created = cli(
        "keys",
        "create",
        "--name",
        "racer",
        "--budget-usd",
        "1.00",
        "--budget-period",
        "total",
        "--database-url",
        url,
    )
    key = created.stdout.strip().splitlines()[-1]
    env = {"PILOTHOUSE_REDIS_URL": redis_url}
    config = _config(tmp_path)
    with (
        InProcessServer(url, home=tmp_path, config=config, env=env) as a,
        InProcessServer(url, home=tmp_path, config=config, env=env) as b,
    ):
        responses = asyncio.run(_burst([a, b], key, 50))
        _check_rejections(responses)
        accepted = [r for r in responses if r.status_code == 200]
        spend = sum(float(r.headers["x-pilothouse-cost-usd"]) for r in accepted)
        assert spend <= 1.00 + 0.05 + 1e-9
        assert len(accepted) == 20  # each holds its $0.05 worst case while in flight: exactly $1.00
        # the budget is spent: later requests on either gateway are refused up front
        later = asyncio.run(_burst([a, b], key, 4))
        assert [r.status_code for r in later] == [429] * 4
        _check_rejections(later)
        budgets = httpx.get(f"{a.base_url}/api/budgets", headers={"Authorization": f"Bearer {key}"}).json()
        (budget,) = budgets["data"]
        assert budget["spent_usd"] == pytest.approx(1.0) and budget["reserved_usd"] == 0


class _Webhook:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def webhook() -> Iterator[_Webhook]:
    hook = _Webhook()
    yield hook
    hook.server.shutdown()


def test_soft_budget_alerts_and_hard_user_budget(tmp_path: Path, webhook: _Webhook) -> None:
    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    key = cli("keys", "create", "--name", "team", "--database-url", url).stdout.strip().splitlines()[-1]
    internal = {"PILOTHOUSE_WEBHOOK_ALLOW": "127.0.0.1"}  # the receiver is on loopback: allowed by name
    cli("budgets", "create", "--limit-usd", "0.20", "--soft", "--alerts", "50,100", "--webhook", webhook.url,
        "--period", "day", "--database-url", url, env=internal)  # fmt: skip
    with InProcessServer(url, home=tmp_path, config=_config(tmp_path), env=internal) as server:
        auth = {"Authorization": f"Bearer {key}"}
        # a hard budget for one end user, created through the API by an admin-scoped caller
        admin = cli("keys", "create", "--name", "admin", "--scopes", "admin", "--database-url", url)
        admin_auth = {"Authorization": f"Bearer {admin.stdout.strip().splitlines()[-1]}"}
        r = httpx.post(
            f"{server.base_url}/api/budgets",
            json={"scope": "user", "scope_value": "bob", "period": "day", "limit_usd": 0.1},
            headers=admin_auth,
        )
        assert r.status_code == 201, r.text
        bad = httpx.post(
            f"{server.base_url}/api/budgets", json={"scope": "team", "limit_usd": 1}, headers=admin_auth
        )
        assert bad.status_code == 400 and "scope" in bad.json()["error"]["message"]
        assert (
            httpx.post(f"{server.base_url}/api/budgets", json={"limit_usd": 1}, headers=auth).status_code
            == 403
        )

        def call(user: str) -> httpx.Response:
            return httpx.post(
                f"{server.base_url}/v1/chat/completions",
                json={"model": "pricey", "messages": MESSAGES, "max_tokens": 50},
                headers={**auth, "x-pilothouse-user": user},
            )

        assert [call("bob").status_code for _ in range(3)] == [200, 200, 429]  # bob's $0.10 is spent
        # the soft project budget ($0.20) only alerts: $0.30 is spent in the end
        assert [call("alice").status_code for _ in range(4)] == [200] * 4
        for _ in range(50):
            if len(webhook.received) >= 2:
                break
            asyncio.run(asyncio.sleep(0.1))
        assert [(a["threshold"], a["scope"]) for a in webhook.received] == [
            (0.5, "project"),
            (1.0, "project"),
        ]
        budgets = httpx.get(f"{server.base_url}/api/budgets", headers=auth).json()["data"]
        spent = {b["scope"]: b["spent_usd"] for b in budgets}
        assert spent == {"project": pytest.approx(0.30), "user": pytest.approx(0.10)}
        for _ in range(100):  # the traces reach the store through the ingest queue
            costs = httpx.get(f"{server.base_url}/api/costs", params={"by": "user"}, headers=auth).json()[
                "data"
            ]
            if sum(c["requests"] for c in costs) == 7:
                break
            asyncio.run(asyncio.sleep(0.05))
        assert {c["group"]: round(c["spend_usd"], 6) for c in costs} == {"alice": 0.2, "bob": 0.1}
    report = cli("costs", "report", "--by", "user", "--since", "1h", "--csv", "--database-url", url).stdout
    assert report.splitlines()[0].startswith("group,requests") and "alice,4," in report
