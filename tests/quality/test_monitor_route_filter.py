"""A score monitor's ``model`` filter finds traces by the model a client asked the gateway for (the
route, ``parrot``) as well as by the upstream's own name (``echo-1``), as ``traces list --model`` and
online evaluators' filters do: a new user names the model they call, and a filter that matched nothing
left the monitor without a baseline, silently, for good. Creating one that matches nothing now says so."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from pilothouse.domain.keys import Scope
from pilothouse.quality.monitors import MonitorWorker
from tests.conftest import sqlite_at_head
from tests.server.inprocess import InProcessServer, cli_in_process

CONFIG = """models:
  - {name: parrot, provider: sim, model: echo-1, options: {echo: true}}
  - {name: other, provider: sim, model: sim-1}
"""


def test_a_score_monitor_filters_on_the_route_a_client_called(tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(CONFIG)
    with InProcessServer(
        sqlite_at_head(tmp_path / "m.db"), home=tmp_path, config=config, monitor_interval_s=0
    ) as server:
        key = server.create_key("ops", scopes=frozenset(Scope))
        auth = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=server.base_url, headers=auth) as client:
            traces = {}
            for model in ("parrot", "other"):
                traces[model] = [
                    client.post(
                        "/v1/chat/completions",
                        json={"model": model, "messages": [{"role": "user", "content": f"good {i}"}]},
                    ).headers["x-pilothouse-trace-id"]
                    for i in range(110)
                ]
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if len(client.get("/api/traces", params={"limit": 500}).json()["data"]) == 220:
                    break
                time.sleep(0.05)
            # parrot's calls pass, the other route's fail: a baseline of 1.0 only if the filter holds
            scores = [
                {"trace_id": trace_id, "name": "good", "value": model == "parrot"}
                for model, ids in traces.items()
                for trace_id in ids
            ]
            assert client.post("/api/scores", json=scores).status_code == 201
            ids, warnings = {}, {}
            for name, model in (("by-route", "parrot"), ("by-upstream", "echo-1"), ("nothing", "nope")):
                created = client.post(
                    "/api/monitors",
                    json={"name": name, "metric": "score_pass_rate", "score_name": "good", "model": model},
                )
                assert created.status_code == 201, created.text
                ids[name] = created.json()["id"]
                warnings[name] = created.json()["warnings"]
            later = time.time_ns() + 10 * 10**9  # score monitors read scores at least 5 s old
            worker = MonitorWorker(server.store, clock=lambda: later)

            async def evaluate() -> None:
                await worker.run_once()
                await worker.close()

            asyncio.run(evaluate())
            states = {name: client.get(f"/api/monitors/{i}").json()["state"] for name, i in ids.items()}
    assert states["by-route"]["baseline_n"] == 110 and states["by-route"]["baseline"] == 1.0
    assert states["by-upstream"]["baseline_n"] == 110 and states["by-upstream"]["baseline"] == 1.0
    assert states["nothing"]["baseline_n"] == 0
    # creating one that matches nothing says so (the API's warnings, the CLI's note)
    assert warnings["by-route"] == warnings["by-upstream"] == []
    assert warnings["nothing"] == [
        "no score named 'good' with model 'nope' in the last 7 days: the monitor has no baseline until "
        "some arrive; check the score's name on a trace (pilothouse traces show) and the filters."
    ]
    url = server.database_url
    made = cli_in_process(
        "monitors",
        "create",
        "--name",
        "typo",
        "--metric",
        "score_mean",
        "--score",
        "godo",
        "--database-url",
        url,
    )
    assert made.returncode == 0 and "note: no score named 'godo' in the last 7 days" in made.stderr, (
        made.stderr
    )
    made = cli_in_process(
        "monitors",
        "create",
        "--name",
        "calls",
        "--metric",
        "error_rate",
        "--model",
        "parrot",
        "--database-url",
        url,
    )
    assert "note: no model calls with model 'parrot'" in made.stderr and "MODEL column" in made.stderr
    made = cli_in_process(
        "monitors",
        "create",
        "--name",
        "served",
        "--metric",
        "error_rate",
        "--model",
        "echo-1",
        "--database-url",
        url,
    )
    assert made.returncode == 0 and "note:" not in made.stderr, made.stderr
