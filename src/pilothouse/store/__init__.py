"""Storage: SQLAlchemy Core tables, Alembic migrations and the repository (SQLite or PostgreSQL)."""

from pilothouse.store.engine import make_engine, normalise_url, upgrade_schema
from pilothouse.store.sql import SqlStore

__all__ = ["SqlStore", "make_engine", "normalise_url", "upgrade_schema"]
