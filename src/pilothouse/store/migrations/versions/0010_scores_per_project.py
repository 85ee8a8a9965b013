"""Score ids are unique per project, not across projects: the primary key of ``scores`` becomes
(project_id, id). A client may choose a score's id; with one key for every project, an id another
project had already used failed (a 500) and so said that it existed there.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_COLUMNS = (
    "id, project_id, trace_id, observation_id, name, data_type, value, string_value, source, comment, "
    "created_ns"
)


def _rebuild(primary_key: tuple[str, ...]) -> None:
    """``scores`` copied into a table of the same columns with ``primary_key`` (the portable way to
    change a primary key: SQLite cannot alter one in place)."""
    op.create_table(
        "scores_new",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("observation_id", sa.String(16)),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("data_type", sa.String(16), nullable=False),
        sa.Column("value", sa.Float()),
        sa.Column("string_value", sa.Text()),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("comment", sa.Text()),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(*primary_key, name=f"pk_scores_{'_'.join(primary_key)}"),
    )
    op.execute(f"INSERT INTO scores_new ({_COLUMNS}) SELECT {_COLUMNS} FROM scores")
    op.drop_index("ix_scores_trace", "scores")
    op.drop_table("scores")
    op.rename_table("scores_new", "scores")
    op.create_index("ix_scores_trace", "scores", ["project_id", "trace_id"])


def upgrade() -> None:
    _rebuild(("project_id", "id"))


def downgrade() -> None:
    _rebuild(("id",))  # fails if two projects now share an id, as the old key cannot hold them
