"""Online evaluators: their rules (each version kept) and the persisted work of the background worker
that scores live traces (one item per evaluator version and trace, claimed under a lease).

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "online_evaluators",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("cursor_pk", sa.BigInteger(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("project_id", "name", name="uq_online_evaluators_name"),
    )
    op.create_table(
        "online_evaluator_versions",
        sa.Column("evaluator_id", sa.String(32), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "online_items",
        sa.Column("pk", _PK, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("evaluator_id", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("state", sa.String(12), nullable=False),
        sa.Column("due_ns", sa.BigInteger(), nullable=False),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_until_ns", sa.BigInteger()),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("score_id", sa.String(32)),
        sa.Column("value", sa.Float()),
        sa.Column("cost_usd", sa.Float()),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.Column("finished_ns", sa.BigInteger()),
        sa.UniqueConstraint("evaluator_id", "version", "trace_id", name="uq_online_items_trace"),
    )
    op.create_index("ix_online_items_due", "online_items", ["state", "due_ns"])
    op.create_index("ix_online_items_finished", "online_items", ["evaluator_id", "finished_ns"])
    op.create_index("ix_online_items_trace", "online_items", ["project_id", "trace_id"])


def downgrade() -> None:
    op.drop_table("online_items")
    op.drop_table("online_evaluator_versions")
    op.drop_table("online_evaluators")
