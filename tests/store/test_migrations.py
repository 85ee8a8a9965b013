"""The Alembic migrations build exactly the schema of ``store/tables.py``, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from pilothouse.store.sql import SqlStore
from pilothouse.store.tables import metadata


def test_migrations_match_the_tables(store: SqlStore) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_upgrade_is_idempotent(store: SqlStore) -> None:
    from pilothouse.store.engine import upgrade_schema

    upgrade_schema(store.engine)
    upgrade_schema(store.engine)
