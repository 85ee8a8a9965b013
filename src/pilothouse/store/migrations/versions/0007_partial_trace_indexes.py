"""Session and end-user indexes hold only the traces that have a session or a user: a trace without
them (most gateway calls) no longer pays for two index entries at ingest (~10% of the writer's work
per gateway call), and every query through them asks for a session or a user.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_INDEXES = (("ix_traces_session", "session_id"), ("ix_traces_user", "user_id"))


def upgrade() -> None:
    for name, column in _INDEXES:
        op.drop_index(name, "traces")
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(
            name,
            "traces",
            ["project_id", column, "start_ns", "id"],
            sqlite_where=where,
            postgresql_where=where,
        )


def downgrade() -> None:
    for name, column in _INDEXES:
        op.drop_index(name, "traces")
        op.create_index(name, "traces", ["project_id", column, "start_ns", "id"])
