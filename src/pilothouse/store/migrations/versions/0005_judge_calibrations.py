"""Judge calibrations: versioned agreement of a judge scorer with human labels.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "judge_calibrations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("scorer_name", sa.Text(), nullable=False),
        sa.Column("scorer_type", sa.String(64), nullable=False),
        sa.Column("judge_model", sa.Text()),
        sa.Column("identity", sa.Text(), nullable=False),
        sa.Column("metrics", sa.Text(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("judgements", sa.Text()),
        sa.Column("labels_sha256", sa.String(64), nullable=False),
        sa.Column("labels_source", sa.Text()),
        sa.Column("judge_endpoint", sa.Text()),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("project_id", "fingerprint", "version", name="uq_judge_calibrations_version"),
    )
    op.create_index("ix_judge_calibrations_created", "judge_calibrations", ["project_id", "created_ns"])


def downgrade() -> None:
    op.drop_index("ix_judge_calibrations_created", "judge_calibrations")
    op.drop_table("judge_calibrations")
