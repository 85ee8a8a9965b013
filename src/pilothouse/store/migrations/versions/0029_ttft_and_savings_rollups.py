"""The rollups hold what the Overview and Costs pages still estimated from a sample of traces: a
``saved_usd`` sum in every rollup (what caching saved), and a ``ttft_hist`` sketch of the streamed
calls' time to first token in the rollups by model (``rollup_minute``, ``rollup_hour``).

Rows stored before this revision count no savings and no time to first token: both figures count
the calls stored since. Adding the columns rewrites no table (a constant default, a nullable column).

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


def upgrade() -> None:
    for table in _ROLLUPS:
        op.add_column(table, sa.Column("saved_usd", sa.Float(), nullable=False, server_default=sa.text("0")))
    hist = sa.LargeBinary().with_variant(postgresql.ARRAY(sa.BigInteger()), "postgresql")
    for table in _MODEL_ROLLUPS:
        op.add_column(table, sa.Column("ttft_hist", hist, nullable=True))


def downgrade() -> None:
    for table in _MODEL_ROLLUPS:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("ttft_hist")
    for table in _ROLLUPS:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("saved_usd")
