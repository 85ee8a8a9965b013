"""A reviewed trace's dataset item keeps the trace's metadata: the context an online evaluator read
(``metadata.context``) goes with the corrected output, so the same scorer finds it in an eval on that
dataset, and ``datasets from-traces --group-by KEY`` can group by a key the application set. Over the
gateway of a real server on loopback, then the CLI on its database."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson

from pilothouse.domain.keys import Scope
from tests.conftest import sqlite_at_head
from tests.server.inprocess import InProcessServer, cli_in_process

CONFIG = "models:\n  - {name: parrot, provider: sim, model: echo-1, options: {echo: true}}\n"


def test_corrected_items_keep_the_trace_metadata(tmp_path: Path) -> None:
    config = tmp_path / "models.yaml"
    config.write_text(CONFIG)
    url = sqlite_at_head(tmp_path / "r.db")
    with InProcessServer(url, home=tmp_path, config=config, online_evals=False) as server:
        key = server.create_key("lead", scopes=frozenset(Scope))
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}) as http:
            ids = []
            for i, tenant in enumerate(("acme", "acme", "globex")):
                reply = http.post(
                    "/v1/chat/completions",
                    json={
                        "model": "parrot",
                        "messages": [{"role": "user", "content": f"Paris is the capital of France. {i}"}],
                        # `model` is a key the item sets itself (the served model): it wins
                        "metadata": {
                            "context": "Paris is the capital of France.",
                            "tenant": tenant,
                            "model": "x",
                        },
                    },
                )
                ids.append(reply.headers["x-pilothouse-trace-id"])
            deadline = time.monotonic() + 30
            while len(http.get("/api/traces").json()["data"]) < 3 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert http.post("/api/review/configs", json={"name": "ok", "kind": "boolean"}).status_code == 201
            assert (
                http.post("/api/review/queues", json={"name": "triage", "configs": ["ok"]}).status_code == 201
            )
            assert (
                http.post("/api/review/queues/triage/items", json={"trace_ids": ids[:1]}).json()["added"] == 1
            )
            item = http.post("/api/review/queues/triage/next").json()["item"]
            assert item["context"] == ["Paris is the capital of France."]
            saved = http.post(
                f"/api/review/items/{item['id']}/scores",
                json={"scores": {"ok": False}, "corrected_output": "Paris is the capital of France."},
            )
            assert saved.status_code == 200, saved.text
            sent = http.post("/api/review/queues/triage/dataset", json={"dataset": "fixes"}).json()
            assert sent["items"] == 1 and sent["corrected"] == 1
    out = tmp_path / "fixes.jsonl"
    exported = cli_in_process("datasets", "export", "fixes", "-o", str(out), "--database-url", url)
    assert exported.returncode == 0, exported.stderr
    [row] = [orjson.loads(line) for line in out.read_text().splitlines()]
    assert row["expected"] == "Paris is the capital of France."
    assert row["metadata"]["context"] == "Paris is the capital of France."
    assert row["metadata"]["tenant"] == "acme" and row["metadata"]["model"] == "echo-1"
    # curation groups by a key of the trace's metadata
    split = cli_in_process(
        "datasets",
        "from-traces",
        "--name",
        "all",
        "--split",
        "50/50",
        "--group-by",
        "tenant",
        "--database-url",
        url,
    )
    assert split.returncode == 0, split.stderr + split.stdout
    assert "have no 'tenant'" not in split.stderr, split.stderr
