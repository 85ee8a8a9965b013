"""The rollups hold what the Overview and Costs pages still estimated from a sample of traces: a
``saved_usd`` sum in every rollup (what caching saved), and a ``ttft_hist`` sketch of the streamed
calls' time to first token in the rollups by model (``rollup_minute``, ``rollup_hour``).

Rows stored before this revision count no savings and no time to first token: both figures count
the calls stored since. Adding the columns rewrites no table (a constant default, a nullable column).

And the index ``ix_traces_user`` holds the columns the Users page sums per user (end, tokens, cost,
errors), so that a month of a busy user's traces is summed from the index instead of read row by row
from the table (at 1,000,000 spans, 30 days of 25 users: ~21,000 table rows for each page).

Revision ID: 0029
Revises: 0028
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None

_MODEL_ROLLUPS = ("rollup_minute", "rollup_hour")
_ROLLUPS = (*_MODEL_ROLLUPS, "rollup_dim_minute", "rollup_dim_hour", "rollup_dim_day")


_USER_INDEX = ["project_id", "user_id", "start_ns", "pk"]
_USER_SUMS = ["end_ns", "total_tokens", "cost_usd", "error_count"]


def _user_index(columns: list[str]) -> None:
    op.drop_index("ix_traces_user", "traces")
    where = sa.text("user_id IS NOT NULL")
    op.create_index("ix_traces_user", "traces", columns, sqlite_where=where, postgresql_where=where)


def upgrade() -> None:
    _user_index(_USER_INDEX + _USER_SUMS)
    for table in _ROLLUPS:
        op.add_column(table, sa.Column("saved_usd", sa.Float(), nullable=False, server_default=sa.text("0")))
    hist = sa.LargeBinary().with_variant(postgresql.ARRAY(sa.BigInteger()), "postgresql")
    for table in _MODEL_ROLLUPS:
        op.add_column(table, sa.Column("ttft_hist", hist, nullable=True))


def downgrade() -> None:
    _user_index(_USER_INDEX)
    for table in _MODEL_ROLLUPS:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("ttft_hist")
    for table in _ROLLUPS:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("saved_usd")
