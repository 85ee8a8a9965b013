"""The gateway (the app of ``pilothouse serve --config``, served in this process on loopback) in front
of a SimulatedUpstream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pilothouse.testing import SimConfig, SimulatedUpstream
from tests.conftest import sqlite_at_head
from tests.server.inprocess import InProcessServer


@dataclass
class Gateway:
    server: InProcessServer
    upstream: SimulatedUpstream
    key: str

    @property
    def base_url(self) -> str:
        return self.server.base_url + "/v1"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def traces(self, expected: int, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Details of the newest ``expected`` traces, once that many are stored."""
        deadline = time.monotonic() + timeout_s
        while True:
            rows = httpx.get(
                f"{self.server.base_url}/api/traces", params={"limit": 100}, headers=self.auth
            ).json()
            if len(rows["data"]) >= expected or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        return [
            httpx.get(f"{self.server.base_url}/api/traces/{row['id']}", headers=self.auth).json()
            for row in rows["data"]
        ]


def start_gateway(
    tmp_path: Path,
    upstream: SimulatedUpstream,
    models: list[dict[str, Any]],
    fallbacks: dict[str, list[str]] | None = None,
    env: dict[str, str] | None = None,
    router: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Gateway:
    config = tmp_path / "pilothouse.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "models": models,
                "fallbacks": fallbacks or {},
                "router": router or {"retries": 2, "backoff_s": 0.01, "max_backoff_s": 0.2},
                **(extra or {}),
            }
        )
    )
    server = InProcessServer(sqlite_at_head(tmp_path / "gw.db"), home=tmp_path, config=config, env=env)
    return Gateway(server, upstream, server.create_key("gw"))


@pytest.fixture(scope="module")
def upstream() -> Iterator[SimulatedUpstream]:
    with SimulatedUpstream(SimConfig(cached_fraction=0.5, reasoning_tokens=2)) as up:
        yield up


@pytest.fixture
def gateway(tmp_path: Path, upstream: SimulatedUpstream) -> Iterator[Gateway]:
    models = [
        {
            "name": "gpt-4o-mini",
            "provider": "openai",
            "model": "gpt-4o-mini",
            "base_url": upstream.base_url + "/v1",
            "api_key": "sk-upstream",
        },
        {
            "name": "text-embedding-3-small",
            "provider": "openai",
            "model": "text-embedding-3-small",
            "base_url": upstream.base_url + "/v1",
        },
        {"name": "sim", "provider": "sim", "model": "sim-1", "options": {"output_tokens": 5}},
    ]
    gw = start_gateway(tmp_path, upstream, models)
    yield gw
    gw.server.stop()
