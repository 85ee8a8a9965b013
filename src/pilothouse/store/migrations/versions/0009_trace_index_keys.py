"""Trace indexes (time, session, end user) end in the trace's integer key instead of its 32-character
id: the key breaks ties between traces that started in the same nanosecond as well, and each entry of
the three indexes is ~25-35 bytes smaller (benchmarks/ingest.py on SQLite: ~100 stored bytes per span).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_INDEXES = (("ix_traces_time", None), ("ix_traces_session", "session_id"), ("ix_traces_user", "user_id"))


def _recreate(last: str) -> None:
    for name, column in _INDEXES:
        op.drop_index(name, "traces")
        where = None if column is None else sa.text(f"{column} IS NOT NULL")
        columns = ["project_id", *([] if column is None else [column]), "start_ns", last]
        op.create_index(name, "traces", columns, sqlite_where=where, postgresql_where=where)


def upgrade() -> None:
    _recreate("pk")


def downgrade() -> None:
    _recreate("id")
