"""``pilothouse serve --workers 2`` on SQLite: the workers hand their spans to one writer process, which
the parent starts again when it dies; circuit breakers and ``/metrics`` are the whole server's, through
Redis. Real processes on loopback."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml

from tests.server.process import ServerProcess, cli
from tests.server.test_workers import _health_by_pid, redis_url  # noqa: F401 - the fixture
from tests.spans import export_request, llm_attributes, otlp_span

pytestmark = pytest.mark.slow
EXPORTS = 48  # of SPANS each, every span its own trace
SPANS = 40
PROTOBUF = {"Content-Type": "application/x-protobuf", "Connection": "close"}


def _stored(db: Path) -> tuple[int, int, int]:
    """Spans, traces and the traces' own count of their spans, read from the SQLite file."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as conn:
        spans = conn.execute("SELECT count(*) FROM spans").fetchone()[0]
        traces, counted = conn.execute(
            "SELECT count(*), coalesce(sum(observation_count), 0) FROM traces"
        ).fetchone()
    return int(spans), int(traces), int(counted)


def _send(base_url: str, key: str, body: bytes) -> list[int]:
    """One export, sent again after a 503 (the writer restarting) or a 429 (a full queue), as an OTLP
    exporter does; the statuses it got."""
    statuses = []
    for _ in range(2_000):
        status = httpx.post(
            f"{base_url}/v1/traces",
            content=body,
            headers={**PROTOBUF, "Authorization": f"Bearer {key}"},
            timeout=30,
        ).status_code
        statuses.append(status)
        if status not in (429, 503):
            return statuses
        time.sleep(0.02)
    return statuses


def _writer_pid(base_url: str, tries: int = 400) -> int:
    """The span writer's pid as a worker reports it: null until that worker's batch thread has sent
    it spans (a 200 means queued), so ask again, each time on a new connection (either worker)."""
    for _ in range(tries):
        body = httpx.get(base_url + "/health", headers={"Connection": "close"}, timeout=5).json()
        if (pid := body["span_writer"]["pid"]) is not None:
            return int(pid)
        time.sleep(0.02)
    raise AssertionError("no worker reported the span writer's pid")


def test_two_workers_on_sqlite_store_every_span_once_across_a_writer_restart(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture
) -> None:
    db = tmp_path / "pilothouse.db"
    url = f"sqlite:///{db}"
    key = cli("keys", "create", "--name", "ingest", "--database-url", url).stdout.strip().splitlines()[-1]
    bodies = [
        export_request([otlp_span("llm", llm_attributes()) for _ in range(SPANS)]).SerializeToString()
        for _ in range(EXPORTS)
    ]
    env = {"PILOTHOUSE_REDIS_URL": redis_url, "PILOTHOUSE_HOME": str(tmp_path)}
    with ServerProcess(url, args=("--workers", "2"), env=env) as server:
        workers = _health_by_pid(server.base_url, 2)
        assert len(workers) == 2
        with ThreadPoolExecutor(8) as pool:  # concurrent exports over new connections: both workers
            first = list(pool.map(lambda body: _send(server.base_url, key, body), bodies[: EXPORTS // 2]))
            writer_pid = _writer_pid(server.base_url)
            assert writer_pid not in workers and writer_pid != server.pid
            os.kill(writer_pid, signal.SIGKILL)  # chunks it had not answered are sent to the next one
            second = list(pool.map(lambda body: _send(server.base_url, key, body), bodies[EXPORTS // 2 :]))
        assert all(statuses[-1] == 200 for statuses in first + second), first + second
        total = EXPORTS * SPANS
        for _ in range(1_200):
            if _stored(db)[0] >= total:
                break
            time.sleep(0.05)
        processes = _health_by_pid(server.base_url, 2)
        accepted = {pid: int(body["ingest_accepted"]) for pid, body in processes.items()}  # type: ignore[call-overload]
        assert len(accepted) == 2 and all(accepted.values()), accepted  # both workers took exports
        reported = [body["span_writer"]["pid"] for body in processes.values()]  # type: ignore[index]
        restarted = {int(pid) for pid in reported if pid is not None}
        assert restarted and writer_pid not in restarted  # the workers write through the parent's new writer
    assert server.proc.returncode == 0
    for pid in (*workers, *restarted):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # SIGTERM to the parent stopped the workers, then the writer
    # every acknowledged span stored exactly once: no span twice, no trace counting a span twice
    assert _stored(db) == (total, total, total)


def test_a_breaker_opened_in_one_worker_is_open_in_the_other_and_metrics_sum_both(
    tmp_path: Path,
    redis_url: str,  # noqa: F811 - the fixture
) -> None:
    url = f"sqlite:///{tmp_path / 'pilothouse.db'}"
    key = cli("keys", "create", "--name", "caller", "--database-url", url).stdout.strip().splitlines()[-1]
    flaky = f"flaky-{uuid.uuid4().hex[:8]}"  # its own deployment id: no other test's breaker in Redis
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": [
                    {"name": "sim", "provider": "sim", "model": "sim"},
                    {"name": flaky, "provider": "sim", "model": flaky, "options": {"error_rate": 1.0}},
                ],
                "router": {"retries": 0, "breaker_failures": 2, "breaker_cooldown_s": 600},
            }
        )
    )
    env = {"PILOTHOUSE_REDIS_URL": redis_url, "PILOTHOUSE_HOME": str(tmp_path)}
    auth = {"Authorization": f"Bearer {key}"}
    with ServerProcess(url, args=("--config", str(config), "--workers", "2"), env=env) as server:
        # one kept-alive connection to each worker: what is sent on it, that worker answers
        pinned: dict[int, httpx.Client] = {}
        for _ in range(400):
            client = httpx.Client(base_url=server.base_url, headers=auth, timeout=30)
            pid = int(client.get("/health").json()["pid"])
            if pid in pinned:
                client.close()
            else:
                pinned[pid] = client
            if len(pinned) == 2:
                break
        assert len(pinned) == 2, "the kernel handed every connection to one worker"
        one, other = pinned.values()

        def deployment(client: httpx.Client, model: str) -> dict[str, object]:
            rows = client.get("/api/deployments").json()["data"]
            return next(row for row in rows if row["model"] == model)

        def chat(client: httpx.Client, model: str) -> httpx.Response:
            return client.post(
                "/v1/chat/completions", json={"model": model, "messages": [{"role": "user", "content": "hi"}]}
            )

        assert [chat(one, flaky).status_code for _ in range(2)] == [500, 500]
        assert deployment(one, flaky)["state"] == "open"
        for _ in range(400):  # published through Redis, applied by the other worker's event loop
            if deployment(other, flaky)["state"] == "open":
                break
            time.sleep(0.025)
        seen = deployment(other, flaky)
        assert seen["state"] == "open" and seen["requests"] == 0  # opened without a call of its own
        refused = chat(other, flaky)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "deployments_unavailable"

        # /metrics through either worker counts the calls both answered
        for client in (one, other):
            for _ in range(3):
                assert chat(client, "sim").status_code == 200
        wanted = 'pilothouse_gateway_requests_total{model="sim",deployment="sim/sim@default",status="200"} 6'
        for client in (one, other):  # each worker publishes its counters every second
            for _ in range(400):
                text = client.get("/metrics").text
                if wanted in text:
                    break
                time.sleep(0.05)
            assert wanted in text, text
        failed = f'pilothouse_gateway_requests_total{{model="{flaky}",deployment="",status='
        assert f'{failed}"500"}} 2' in text and f'{failed}"503"}} 1' in text  # one worker's, the other's
        for client in pinned.values():
            client.close()
