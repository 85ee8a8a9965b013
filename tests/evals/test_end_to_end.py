"""The issue's end-to-end check: a dataset, a prompt v1 and a worse v2, run through a real gateway
(``pilothouse serve``, the simulated model echoing its prompt) with ``pilothouse eval run``; the gate
exits 1 for v2 and 0 for v1 against v1, and every call is traced by the gateway."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from pilothouse.store.evals import EvalStore
from pilothouse.store.sql import SqlStore
from pilothouse.testing import PilothouseServer
from tests.evals.conftest import topic_items, write_jsonl, write_yaml
from tests.server.process import cli

pytestmark = pytest.mark.slow  # the gateway and the CLI as the user runs them: processes
ITEMS = 200


def spec(path: Path, base_url: str, prompt: str) -> Path:
    return write_yaml(
        path,
        {
            "dataset": "items.jsonl",
            "target": {
                "model": "sim",
                "base_url": base_url,
                "api_key": "${PILOTHOUSE_API_KEY}",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": prompt}],
            },
            "scorers": [{"type": "contains", "value": "{{topic}}"}],
            "concurrency": 32,
        },
    )


def test_prompt_v2_is_caught_by_the_gate(tmp_path: Path) -> None:
    config = write_yaml(
        tmp_path / "gateway.yaml",
        {"models": [{"name": "sim", "provider": "sim", "model": "sim-1", "options": {"echo": True}}]},
    )
    gateway_db = f"sqlite:///{tmp_path / 'gateway.db'}"
    eval_db = f"sqlite:///{tmp_path / 'evals.db'}"
    key = (
        cli("keys", "create", "--name", "evals", "--database-url", gateway_db).stdout.strip().splitlines()[-1]
    )
    env = {"PILOTHOUSE_API_KEY": key}
    write_jsonl(tmp_path / "items.jsonl", topic_items(ITEMS))
    with PilothouseServer(gateway_db, args=["--config", str(config)]) as server:
        base_url = server.base_url + "/v1"
        v1 = spec(tmp_path / "v1.yaml", base_url, "Explain {{topic}} briefly.")
        v2 = spec(tmp_path / "v2.yaml", base_url, "Explain the topic briefly.")
        runs = {}
        for name, path in (("v1", v1), ("v1-again", v1), ("v2", v2)):
            done = cli("eval", "run", str(path), "--quiet", "--database-url", eval_db, env=env)
            assert done.returncode == 0, done.stderr
            runs[name] = done.stdout.strip().splitlines()[-1]

        same = cli(
            "gate",
            "--baseline",
            runs["v1"],
            "--candidate",
            runs["v1-again"],
            "--database-url",
            eval_db,
            "--report-dir",
            str(tmp_path / "same"),
        )
        assert same.returncode == 0, same.stdout + same.stderr
        worse = cli(
            "gate",
            "--baseline",
            runs["v1"],
            "--candidate",
            runs["v2"],
            "--database-url",
            eval_db,
            "--report-dir",
            str(tmp_path / "worse"),
        )
        assert worse.returncode == 1, worse.stdout + worse.stderr
        report = json.loads((tmp_path / "worse" / "gate.json").read_text())
        assert report["metrics"][0]["n_paired"] == ITEMS and report["metrics"][0]["delta"] == -1.0

        store = EvalStore(SqlStore.from_url(eval_db))
        first = next(store.iter_results(runs["v1"]))
        again = store.get_run(runs["v1-again"])
        store.store.close()
        assert again is not None and again.summary is not None and again.summary.cached == ITEMS
        deadline = time.monotonic() + 10
        while True:  # the gateway recorded the call in the trace the runner chose
            answer = httpx.get(
                f"{server.base_url}/api/traces/{first.trace_id}", headers={"Authorization": f"Bearer {key}"}
            )
            if answer.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert answer.status_code == 200
        [generation] = answer.json()["observations"]
        assert generation["model"] == "sim-1"
