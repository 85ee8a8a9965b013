"""Monitors end to end in this process: created through /api/monitors (admin scope, bad input answered
400 naming the field), evaluated by the worker over the real store, an alert delivered as Slack-shaped
JSON to a real HTTP receiver on loopback, acknowledged, silenced, and kept per project; the lease
lets one of two workers evaluate."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from pilothouse.domain.keys import Scope
from pilothouse.domain.scores import make_score
from pilothouse.quality.monitors import MonitorWorker
from pilothouse.server import Settings, create_app
from pilothouse.store.sql import SqlStore
from tests.conftest import sqlite_at_head
from tests.ui.conftest import csrf_of, login


class Receiver:
    """An HTTP server on loopback that keeps the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T000/secret"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class App:
    def __init__(self, client: TestClient, store: SqlStore, keys: dict[str, str]) -> None:
        self.client, self.store, self.keys = client, store, keys

    def call(self, method: str, path: str, key: str = "admin", **options: Any) -> Any:
        return self.client.request(
            method, path, headers={"Authorization": f"Bearer {self.keys[key]}"}, **options
        )


@pytest.fixture
def app(tmp_path: Path) -> Iterator[App]:
    store = SqlStore.from_url(sqlite_at_head(tmp_path / "monitors.db"))
    keys = {
        "admin": store.create_api_key("p1", "ops", frozenset({Scope.READ, Scope.ADMIN}))[1],
        "read": store.create_api_key("p1", "viewer", frozenset({Scope.READ}))[1],
        "other": store.create_api_key("p2", "other", frozenset({Scope.READ, Scope.ADMIN}))[1],
    }
    settings = Settings(home=tmp_path, webhook_allow=("127.0.0.1",), monitor_interval_s=0)
    with TestClient(create_app(settings, store=store)) as client:
        yield App(client, store, keys)
    store.close()


def test_bad_monitors_are_refused_naming_the_field(app: App) -> None:
    good = {"name": "correctness", "metric": "score_pass_rate", "score_name": "correct"}
    cases = [
        ({**good, "metric": "vibes"}, "metric"),
        ({k: v for k, v in good.items() if k != "score_name"}, "score_name"),
        ({**good, "colour": "red"}, "colour"),
        ({**good, "shift": 2}, "shift"),
        ({**good, "arl0": "many"}, "arl0"),
        ({**good, "webhook_url": "http://169.254.169.254/latest"}, "webhook_url"),
        ({**good, "webhook_url": "http://user:pw@127.0.0.1/"}, "webhook_url"),
        ({"name": "p95", "metric": "latency_p95", "prompt_version": "v2"}, "prompt_version"),
        ({**good, "name": "x" * 201}, "name"),
        ({**good, "name": "ok\r\nERROR forged log line"}, "name"),  # names reach logs and Slack as is
        ({**good, "model": "gpt\x1b[31m"}, "model"),
    ]
    for body, param in cases:
        r = app.call("POST", "/api/monitors", json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)
    assert app.call("POST", "/api/monitors", content=b"[1, 2]").status_code == 400
    assert app.call("POST", "/api/monitors", "read", json=good).status_code == 403
    assert app.call("GET", "/api/monitors/alerts?status=closed").status_code == 400
    assert app.call("GET", "/api/monitors/alerts?limit=99999").status_code == 400
    assert app.call("GET", "/api/monitors", "read").json() == {"data": []}


def _scores(store: SqlStore, start_ns: int, passes: list[bool], prefix: str) -> None:
    store.add_scores(
        "p1",
        [
            make_score(
                trace_id="a" * 32,
                name="correct",
                value=ok,
                score_id=f"{prefix}{i}",
                created_ns=start_ns + i * 10**6,
            )
            for i, ok in enumerate(passes)
        ],
    )


@pytest.mark.slow  # a few hundred scores written and two detector designs: about a second
def test_a_drop_alerts_a_webhook_once_then_ack_and_silence(app: App) -> None:
    hook = Receiver()
    body = {
        "name": "correctness",
        "metric": "score_pass_rate",
        "score_name": "correct",
        "threshold": 0.5,
        "webhook_url": hook.url,
    }
    created = app.call("POST", "/api/monitors", json=body)
    assert created.status_code == 201, created.text
    monitor_id = created.json()["id"]
    shown = app.call("GET", "/api/monitors", "read").json()["data"][0]
    assert shown["webhook_url"] == f"http://127.0.0.1:{hook.server.server_address[1]}/…"  # no secret path

    now = [time.time_ns()]
    _scores(app.store, now[0] - 3600 * 10**9, [i % 10 != 0 for i in range(1000)], "base")  # 90% pass
    worker = MonitorWorker(app.store, webhook_allow=("127.0.0.1",), clock=lambda: now[0])
    other = MonitorWorker(app.store, clock=lambda: now[0])

    async def scenario() -> None:
        assert await worker.run_once() == []  # the baseline is taken; nothing to watch yet
        assert other.evaluate(now[0]) is None  # the lease is the first worker's
        state = app.call("GET", f"/api/monitors/{monitor_id}", "read").json()["state"]
        assert state["baseline"] == pytest.approx(0.9) and state["baseline_n"] == 1000

        now[0] += 60 * 10**9
        _scores(app.store, now[0] - 50 * 10**9, [i % 2 == 0 for i in range(600)], "drop")  # 50% pass
        fired = await worker.run_once()
        assert len(fired) == 1  # one open alert, however often the statistic crosses meanwhile
        assert len(hook.received) == 1
        payload = hook.received[0]
        assert payload["type"] == "monitor.alert" and payload["monitor_id"] == monitor_id
        assert "pass rate of correct fell" in payload["text"] and payload["observed"] < 0.75
        assert payload["baseline"] == pytest.approx(0.9)

        alerts = app.call("GET", "/api/monitors/alerts?status=open", "read").json()["data"]
        assert [(a["id"], a["delivery"], a["silenced"]) for a in alerts] == [
            (fired[0].alert.id, "sent", False)
        ]
        assert app.call("POST", f"/api/monitors/alerts/{alerts[0]['id']}/ack", "read").status_code == 403
        assert app.call("POST", f"/api/monitors/alerts/{alerts[0]['id']}/ack", "other").status_code == 404
        acked = app.call("POST", f"/api/monitors/alerts/{alerts[0]['id']}/ack")
        assert acked.json()["status"] == "acknowledged" and acked.json()["acknowledged_by"].startswith(
            "key ops"
        )

        silenced = app.call("POST", f"/api/monitors/{monitor_id}/silence", json={"until": "2h"})
        assert silenced.status_code == 200 and silenced.json()["silenced_until_ns"] > now[0]
        assert (
            app.call("POST", f"/api/monitors/{monitor_id}/silence", json={"until": "-1h"}).status_code == 400
        )
        now[0] += 60 * 10**9
        _scores(app.store, now[0] - 50 * 10**9, [False] * 300, "worse")
        quiet = await worker.run_once()
        assert (
            len(quiet) == 1 and quiet[0].alert.silenced
        )  # 300 failures: one silenced alert, not one per alarm
        now[0] += 60 * 10**9
        _scores(app.store, now[0] - 50 * 10**9, [False] * 300, "later")
        assert await worker.run_once() == []  # the silenced alert is still open: nothing more stored
        assert len(hook.received) == 1  # stored, not sent
        await worker.close()

    asyncio.run(scenario())
    history = app.call("GET", "/api/monitors/alerts", "read").json()["data"]
    assert history[-1]["status"] == "acknowledged" and all(a["silenced"] for a in history[:-1])

    # the UI's page: the alert history, and an admin lifts the silence through its form
    assert login(app.client, app.keys["admin"]).status_code == 200  # redirected to the overview
    page = app.client.get("/monitors")
    assert (
        page.status_code == 200 and "pass rate of correct fell" in page.text and "acknowledged" in page.text
    )
    assert "No process is evaluating the monitors" in page.text  # the worker gave its lease up; none runs
    lifted = app.client.post(
        f"/monitors/{monitor_id}/silence", data={"csrf": csrf_of(page.text), "until": "off"}
    )
    assert lifted.status_code == 200 and "Silence lifted." in lifted.text
    refused = app.client.post(
        f"/monitors/{monitor_id}/silence", data={"csrf": csrf_of(page.text), "until": "x"}
    )
    assert refused.status_code == 400 and "Not silenced" in refused.text
    assert app.call("GET", "/api/monitors/alerts", "other").json() == {"data": []}
    assert app.call("DELETE", f"/api/monitors/{monitor_id}", "other").status_code == 404
    assert app.call("DELETE", f"/api/monitors/{monitor_id}").status_code == 204
    assert app.call("GET", f"/api/monitors/{monitor_id}").status_code == 404
    assert app.call("GET", "/api/monitors/alerts").json() == {"data": []}
    hook.server.shutdown()


def test_the_app_runs_the_monitors_job(tmp_path: Path) -> None:
    store = SqlStore.from_url(sqlite_at_head(tmp_path / "job.db"))
    with TestClient(create_app(Settings(home=tmp_path, monitor_interval_s=30), store=store)) as client:
        worker = client.app.state.pilothouse.monitors  # type: ignore[attr-defined]
        assert isinstance(worker, MonitorWorker) and worker.interval_s == 30
        assert client.get("/health").json()["monitors"]["stalled"] is False
    store.close()


def test_the_watchdog_sees_a_monitors_job_no_process_runs(sqlite_store: SqlStore) -> None:
    now = [time.time_ns()]
    worker = MonitorWorker(sqlite_store, interval_s=60, clock=lambda: now[0])
    assert worker.evaluate(now[0]) == []  # a pass: this process holds the lease for 3 minutes
    assert worker.health() | {"last_pass_s": None} == {
        "passes": 1,
        "last_pass_s": None,
        "held_by": "this process",
        "stalled": False,
        "reasons": [],
    }
    other = MonitorWorker(sqlite_store, interval_s=60, clock=lambda: now[0])
    assert other.health()["held_by"] == "another process" and not other.health()["stalled"]
    now[0] += 240 * 10**9  # four minutes without a pass anywhere: the pass hung, or its process died
    assert other.health()["reasons"] == ["no process has evaluated the monitors for 240s"]
    assert other.evaluate(now[0]) == [] and other.health()["stalled"] is False  # taken over


@pytest.mark.slow  # the commands as a user runs them, each a process
def test_the_cli_manages_monitors(tmp_path: Path) -> None:
    from tests.server.process import cli as cli_in_process

    url = sqlite_at_head(tmp_path / "cli.db")
    db = ("--database-url", url)
    bad = cli_in_process("monitors", "create", "--name", "x", "--metric", "score_mean", *db)
    assert bad.returncode == 2 and "monitor needs --score" in bad.stderr  # the flag, not the API's field
    made = cli_in_process(
        "monitors", "create", "--name", "errors", "--metric", "error_rate", "--model", "gpt-4o", *db
    )
    assert made.returncode == 0, made.stderr
    monitor_id = made.stdout.strip().splitlines()[-1]
    listed = cli_in_process("monitors", "list", *db)
    assert monitor_id in listed.stdout and "error_rate" in listed.stdout
    silenced = cli_in_process("monitors", "silence", "errors", "--until", "30m", *db)  # by name
    assert silenced.returncode == 0 and "'errors' silenced until" in silenced.stdout
    assert cli_in_process("monitors", "alerts", "--monitor", "errors", *db).returncode == 0
    again = cli_in_process("monitors", "create", "--name", "errors", "--metric", "error_rate", *db)
    assert again.returncode == 0
    twice = cli_in_process("monitors", "silence", "errors", "--until", "30m", *db)
    assert twice.returncode == 2 and "2 monitors are called 'errors'" in twice.stderr
    assert cli_in_process("monitors", "silence", monitor_id, "--until", "soon", *db).returncode == 2
    missing = cli_in_process("monitors", "ack", "nope", *db)
    assert missing.returncode == 1 and "No alert 'nope'" in missing.stderr
    assert cli_in_process("monitors", "delete", monitor_id, *db).returncode == 0
    assert cli_in_process("monitors", "delete", monitor_id, *db).returncode == 1


class _Failing(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        return None


@pytest.mark.slow  # three passes and hundreds of scores: about a second
def test_a_refused_or_failed_webhook_is_recorded(app: App) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    body = {"name": "watch", "metric": "score_pass_rate", "score_name": "correct", "webhook_url": url}
    assert app.call("POST", "/api/monitors", json=body).status_code == 201
    now = [time.time_ns()]
    _scores(app.store, now[0] - 3600 * 10**9, [i % 10 != 0 for i in range(500)], "base")
    allowing = MonitorWorker(app.store, webhook_allow=("127.0.0.1",), clock=lambda: now[0])
    # the same process after a restart with webhook_allow emptied: loopback is refused at the send
    refusing = MonitorWorker(app.store, clock=lambda: now[0], holder=allowing.holder)

    async def passes() -> list[str]:
        await allowing.run_once()  # the baseline
        deliveries = []
        for worker, prefix in ((refusing, "down"), (allowing, "again")):
            now[0] += 60 * 10**9
            _scores(app.store, now[0] - 50 * 10**9, [False] * 200, prefix)
            (fired,) = await worker.run_once()
            (alert,) = app.call("GET", "/api/monitors/alerts?status=open").json()["data"]
            assert alert["id"] == fired.alert.id
            deliveries.append(alert["delivery"])
            assert app.call("POST", f"/api/monitors/alerts/{alert['id']}/ack").status_code == 200
        await allowing.close()
        await refusing.close()
        return deliveries

    refused, failed = asyncio.run(passes())
    assert refused.startswith("refused: 127.0.0.1 resolves to 127.0.0.1, which is not a public address")
    assert failed == "answered 500"
    # the CLI's alert list shows each webhook's outcome
    from tests.server.inprocess import cli_in_process

    database = app.store.engine.url.render_as_string(hide_password=False)
    listed = cli_in_process("monitors", "alerts", "--project", "p1", "--database-url", database)
    assert listed.returncode == 0 and "DELIVERY" in listed.stdout.splitlines()[0], listed.stderr
    assert " answered 500 " in listed.stdout and " refused: 127.0.0.1 resolves to" in listed.stdout
    server.shutdown()
