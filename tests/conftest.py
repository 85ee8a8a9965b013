"""Shared fixtures: real SQLite and PostgreSQL stores, span builders, a served app."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pilothouse.store.sql import SqlStore

PG_ADMIN_URL = os.environ.get("PILOTHOUSE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _pg_available() -> str | None:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN_URL.replace("postgresql://", "postgresql://", 1), connect_timeout=3):
            return None
    except Exception as exc:
        return str(exc).splitlines()[0]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """URL of a fresh PostgreSQL database for this test session (dropped afterwards).

    Skips when PostgreSQL is not running, except in CI, where that is a failure."""
    problem = _pg_available()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI and is not reachable: {problem}")
        pytest.skip(f"PostgreSQL not reachable: {problem}")
    yield from _new_pg_database("ph_test")


def _new_pg_database(prefix: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped when the generator is closed."""
    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_pg_url(pg_server: str) -> Iterator[str]:
    """The URL of a new PostgreSQL database with no tables (for migration tests); ``pg_server``
    first checks that PostgreSQL runs."""
    yield from _new_pg_database("ph_empty")


def _clean(store: SqlStore) -> None:
    from pilothouse.store.tables import metadata

    with store.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    """A migrated, empty store on SQLite (a file) and on the real PostgreSQL."""
    if request.param == "sqlite":
        s = SqlStore.from_url(f"sqlite:///{tmp_path / 'test.db'}")
    else:
        s = SqlStore.from_url(request.getfixturevalue("pg_server"))
        _clean(s)
    yield s
    s.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SqlStore]:
    """A migrated SQLite store (for tests where the database kind does not matter)."""
    s = SqlStore.from_url(f"sqlite:///{tmp_path / 'test.db'}")
    yield s
    s.close()


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder of converted local models for the whole session (converting SmolLM2 takes ~20 s)."""
    return tmp_path_factory.mktemp("models")
