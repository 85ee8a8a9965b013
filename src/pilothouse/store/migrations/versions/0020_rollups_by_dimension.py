"""Rollups of model calls by dimension (end user, virtual key, prompt version, tag), per minute, per
hour and per day: exact breakdowns on the Overview and Costs pages without a sample. And a ``refused``
sum in every rollup: calls the gateway turned away (unknown model, limits, budgets), no longer counted
as errors. And two indexes for "top traces" over a whole range (by cost, by latency).

Calls stored before this revision are not in the dimension rollups, and their refusals stay counted
as errors.

Revision ID: 0020
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0020"
down_revision = "0016"
branch_labels = None
depends_on = None

_BIG = sa.BigInteger()
_SUMS = (
    "count",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)


def _dim_rollup(name: str) -> None:
    op.create_table(
        name,
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("bucket", _BIG, primary_key=True),
        sa.Column("dimension", sa.String(16), primary_key=True),
        sa.Column("value", sa.Text(), primary_key=True),
        *(sa.Column(col, _BIG, nullable=False) for col in _SUMS),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("unpriced", _BIG, nullable=False),
        sa.Column("latency_ms_sum", sa.Float(), nullable=False),
        sa.Column("refused", _BIG, nullable=False, server_default=sa.text("0")),
        sa.Column(
            "latency_hist",
            sa.LargeBinary().with_variant(postgresql.ARRAY(sa.BigInteger()), "postgresql"),
            nullable=False,
        ),
    )


def upgrade() -> None:
    for table in ("rollup_minute", "rollup_hour"):
        op.add_column(table, sa.Column("refused", _BIG, nullable=False, server_default=sa.text("0")))
    _dim_rollup("rollup_dim_minute")
    _dim_rollup("rollup_dim_hour")
    _dim_rollup("rollup_dim_day")
    op.create_index("ix_traces_cost", "traces", ["project_id", "cost_usd", "start_ns"])
    op.create_index("ix_traces_latency", "traces", ["project_id", sa.text("(end_ns - start_ns)"), "start_ns"])


def downgrade() -> None:
    op.drop_index("ix_traces_latency", "traces")
    op.drop_index("ix_traces_cost", "traces")
    op.drop_table("rollup_dim_day")
    op.drop_table("rollup_dim_hour")
    op.drop_table("rollup_dim_minute")
    for table in ("rollup_hour", "rollup_minute"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("refused")
