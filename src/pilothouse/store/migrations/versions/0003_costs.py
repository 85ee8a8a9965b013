"""Costs: the key of each gateway call on its span, and budgets.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("spans") as batch:
        batch.add_column(sa.Column("key_id", sa.String(32)))  # the virtual key of a gateway call
        batch.add_column(sa.Column("saved_usd", sa.Float()))  # what caching saved on this call
    op.create_table(
        "budgets",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),  # project | key | user | tag
        sa.Column("scope_value", sa.Text(), nullable=False),  # "" for a project budget
        sa.Column("period", sa.String(8), nullable=False),  # day | week | month | total
        sa.Column("limit_usd", sa.Float(), nullable=False),
        sa.Column("hard", sa.Boolean(), nullable=False),
        sa.Column("alert_thresholds", sa.Text(), nullable=False),  # comma-separated fractions
        sa.Column("webhook_url", sa.Text()),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_budgets_project", "budgets", ["project_id", "scope"])


def downgrade() -> None:
    op.drop_index("ix_budgets_project", "budgets")
    op.drop_table("budgets")
    with op.batch_alter_table("spans") as batch:
        batch.drop_column("saved_usd")
        batch.drop_column("key_id")
