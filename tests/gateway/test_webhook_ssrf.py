"""Budget webhooks cannot be aimed inside the network (issue 21, class 8): private, loopback,
link-local, multicast and unspecified targets are refused however they are written, when the budget is
created and again when an alert is sent; an allow-list admits internal receivers; credentials in a
webhook URL are refused and never shown."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import update

from pilothouse.domain.budgets import BudgetPeriod, BudgetScope
from pilothouse.domain.keys import Scope
from pilothouse.domain.money import Money
from pilothouse.domain.webhooks import WebhookRefused, displayed_webhook_url
from pilothouse.gateway.webhooks import resolve_webhook_sync
from pilothouse.store import tables
from pilothouse.store.costs import CostStore
from pilothouse.store.sql import SqlStore
from tests.conftest import sqlite_at_head
from tests.server.inprocess import InProcessServer

INTERNAL = [
    "http://127.0.0.1/",
    "http://2130706433/",  # 127.0.0.1 as one decimal number
    "http://0x7f000001/",  # ... in hex
    "http://0177.0.0.1/",  # ... in octal
    "http://127.1/",
    "http://localhost:8080/hook",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
    "http://[::ffff:0:127.0.0.1]/",  # IPv4-translated (SIIT)
    "http://[::ffff:a9fe:a9fe]/",  # 169.254.169.254, mapped
    "http://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
    "http://[2002:c0a8:101::1]/",  # 6to4 of 192.168.1.1
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    "http://10.1.2.3/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://[fd00::1]/",  # unique local
    "http://[fe80::1]/",  # link-local
    "http://224.0.0.1/",  # multicast
    "http://0.0.0.0/",
    "http://[::]/",
]


@pytest.mark.parametrize("url", INTERNAL)
def test_internal_targets_are_refused_however_written(url: str) -> None:
    with pytest.raises(WebhookRefused, match="not a public address"):
        resolve_webhook_sync(url)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "http:///path",
        "https://bob:hunter2@example.com/hook",
        "https://bob@example.com/",
    ],
)
def test_malformed_urls_and_credentials_are_refused(url: str) -> None:
    with pytest.raises(WebhookRefused):
        resolve_webhook_sync(url)


def test_the_allow_list_admits_internal_receivers_by_host_address_or_network() -> None:
    assert resolve_webhook_sync("http://127.0.0.1:9/a", ["127.0.0.1"])[1] == ["127.0.0.1"]
    assert resolve_webhook_sync("http://10.1.2.3/a", ["10.0.0.0/8"])[1] == ["10.1.2.3"]
    assert resolve_webhook_sync("http://2130706433/", ["127.0.0.0/8"])[1] == ["127.0.0.1"]
    with pytest.raises(WebhookRefused):
        resolve_webhook_sync("http://10.1.2.3/a", ["192.168.0.0/16", "hooks.internal"])
    assert resolve_webhook_sync("https://93.184.215.14/hook")[1] == ["93.184.215.14"]  # public


def test_displayed_urls_never_carry_credentials() -> None:
    url = "https://bob:hunter2@hooks.example.com:8443/t/SECRET?x=1"
    assert displayed_webhook_url(url, full=True) == "https://hooks.example.com:8443/t/SECRET?x=1"
    assert displayed_webhook_url(url, full=False) == "https://hooks.example.com:8443/…"


class _Receiver:
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
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    hook = _Receiver()
    yield hook
    hook.server.shutdown()


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "hooks.yaml"
    model = {
        "name": "pricey",
        "provider": "sim",
        "model": "p",
        "options": {"output_tokens": 50},
        "price": {"input": 0, "output": 1000},
    }
    path.write_text(yaml.safe_dump({"models": [model]}))
    return path


def _call(server: InProcessServer, key: str) -> None:
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions",
        json={"model": "pricey", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text


@pytest.mark.slow
def test_budget_webhooks_are_checked_at_creation_and_at_every_send(
    tmp_path: Path, receiver: _Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    url = sqlite_at_head(tmp_path / "hooks.db")
    with InProcessServer(url, home=tmp_path, config=_config(tmp_path)) as server:
        admin = {"Authorization": f"Bearer {server.create_key('admin', scopes=frozenset(Scope))}"}
        reader = {"Authorization": f"Bearer {server.create_key('reader', scopes=frozenset({Scope.READ}))}"}
        for target in (
            f"http://2130706433:{receiver.port}/alerts",
            f"http://[::ffff:127.0.0.1]:{receiver.port}/alerts",
            "http://169.254.169.254/latest/meta-data/",
            "https://bob:hunter2@hooks.example.com/alerts",
        ):
            refused = httpx.post(
                f"{server.base_url}/api/budgets",
                json={"limit_usd": 0.1, "hard": False, "webhook_url": target},
                headers=admin,
            )
            assert refused.status_code == 400, (target, refused.text)
            assert refused.json()["error"]["param"] == "webhook_url"
        # URLs stored before this check (or by another tool) are checked again at send time
        store = SqlStore.from_url(url)
        budget = CostStore(store).create_budget(
            "default",
            BudgetScope.PROJECT,
            "",
            BudgetPeriod.DAY,
            Money.from_usd("0.01"),
            hard=False,
            alert_thresholds=(0.5,),
            webhook_url=f"http://2130706433:{receiver.port}/alerts",
        )
        with store.engine.begin() as conn:  # and one with credentials, from an older release
            conn.execute(
                update(tables.budgets)
                .where(tables.budgets.c.id == budget.id)
                .values(webhook_url=f"http://bob:hunter2@2130706433:{receiver.port}/alerts")
            )
        store.close()
        server.app.state.pilothouse.budgets.invalidate()
        shown = httpx.get(f"{server.base_url}/api/budgets", headers=reader).json()["data"]
        assert [b["webhook_url"] for b in shown] == [f"http://2130706433:{receiver.port}/…"]
        assert "hunter2" not in httpx.get(f"{server.base_url}/api/budgets", headers=admin).text
        _call(server, server.create_key())  # $0.05 spent: past 50% of $0.01
        for _ in range(100):
            if any("refused" in r.getMessage() for r in caplog.records):
                break
            time.sleep(0.05)
        assert any("refused" in r.getMessage() for r in caplog.records)
        assert receiver.received == []  # before: POSTed to 127.0.0.1 with Basic bob:hunter2
        assert not any("hunter2" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_an_allow_listed_internal_receiver_gets_its_alerts(tmp_path: Path, receiver: _Receiver) -> None:
    url = sqlite_at_head(tmp_path / "allowed.db")
    env = {"PILOTHOUSE_WEBHOOK_ALLOW": "127.0.0.0/8"}
    with InProcessServer(url, home=tmp_path, config=_config(tmp_path), env=env) as server:
        admin = {"Authorization": f"Bearer {server.create_key('admin', scopes=frozenset(Scope))}"}
        created = httpx.post(
            f"{server.base_url}/api/budgets",
            json={
                "limit_usd": 0.01,
                "hard": False,
                "alert_thresholds": [0.5],
                "webhook_url": f"http://2130706433:{receiver.port}/alerts?token=abc",
            },
            headers=admin,
        )
        assert created.status_code == 201, created.text
        _call(server, server.create_key())
        for _ in range(100):
            if receiver.received:
                break
            time.sleep(0.05)
        assert [a["threshold"] for a in receiver.received] == [0.5]
