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


def test_head_revision_is_alembics_head(store: SqlStore) -> None:
    """Start-up skips Alembic when the database is at head_revision(): it must be Alembic's head."""
    from importlib import resources

    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from pilothouse.store.engine import current_revision, head_revision

    config = Config()
    config.set_main_option("script_location", str(resources.files("pilothouse.store") / "migrations"))
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()
    assert current_revision(store.engine) == head_revision()
