"""Trace lists of one session or one end user: the indexes end with the list's order (start, id), so
SQLite reads the newest page from them instead of walking every trace of the project.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for name, column in (("ix_traces_session", "session_id"), ("ix_traces_user", "user_id")):
        op.drop_index(name, "traces")
        op.create_index(name, "traces", ["project_id", column, "start_ns", "id"])


def downgrade() -> None:
    for name, column in (("ix_traces_session", "session_id"), ("ix_traces_user", "user_id")):
        op.drop_index(name, "traces")
        op.create_index(name, "traces", ["project_id", column, "start_ns"])
