"""An app served in-process (Starlette TestClient runs its lifespan) on a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from pilothouse.domain.keys import DEFAULT_SCOPES
from pilothouse.server import Settings, create_app
from pilothouse.store.sql import SqlStore
from tests.conftest import sqlite_at_head


@dataclass
class Served:
    client: TestClient
    store: SqlStore
    key: str
    other_key: str  # a key of another project

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def drain(self) -> None:
        assert self.client.app.state.pilothouse.ingest.wait_idle(10)  # type: ignore[attr-defined]


def serve(tmp_path: Path, database_url: str | None = None, **settings: object) -> Iterator[Served]:
    """The app over a new SQLite file, or over ``database_url`` (a migrated, empty database)."""
    store = SqlStore.from_url(database_url or sqlite_at_head(tmp_path / "api.db"))
    _, key = store.create_api_key("p1", "test", frozenset(DEFAULT_SCOPES))
    _, other = store.create_api_key("p2", "other", frozenset(DEFAULT_SCOPES))
    app = create_app(Settings(home=tmp_path, **settings), store=store)  # type: ignore[arg-type]
    with TestClient(app) as client:
        yield Served(client, store, key, other)
    store.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    yield from serve(tmp_path)
