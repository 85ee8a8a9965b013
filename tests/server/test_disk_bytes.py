"""The database's size on disk in ``/health`` and on the Keys page comes from every process, including
one whose retention job is off (``retention_interval_s: 0``, e.g. the second server of docs/deploy.md
when another one runs the job)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from pilothouse.domain.keys import Scope
from pilothouse.store.retention import RetentionStore
from tests.server.inprocess import InProcessServer
from tests.ui.conftest import login


@pytest.mark.slow  # migrates a new SQLite file and serves it
def test_disk_bytes_without_the_retention_job(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    env = {"PILOTHOUSE_RETENTION_INTERVAL_S": "0"}
    with InProcessServer(url, home=tmp_path, env=env) as server:
        RetentionStore(server.store).set_retention_days("default", 7)
        health = httpx.get(server.base_url + "/health").json()
        assert "retention" not in health.get("jobs", {})  # the job is off in this process
        assert health["disk_bytes"] > 0 and health["status"] == "ok"
        with httpx.Client(base_url=server.base_url) as client:
            assert login(client, server.create_key(scopes=frozenset(Scope))).status_code == 303
            page = client.get("/keys")
        assert page.status_code == 200
        assert "The database takes" in page.text and "kept 7 days" in page.text
