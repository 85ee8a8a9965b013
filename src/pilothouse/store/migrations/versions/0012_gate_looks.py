"""The quality gate's looks: each recorded gate of a (baseline run, candidate configuration) pair, so
that the gate spends its alpha over repeated looks instead of spending it afresh each time.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gate_looks",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("pair_key", sa.String(64), primary_key=True),
        sa.Column("candidate_run_id", sa.String(32), primary_key=True),
        sa.Column("settings_key", sa.String(32), primary_key=True),
        sa.Column("look", sa.Integer(), nullable=False),
        sa.Column("baseline_run_id", sa.String(32), nullable=False),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("project_id", "pair_key", "look", name="uq_gate_looks_look"),
    )


def downgrade() -> None:
    op.drop_table("gate_looks")
