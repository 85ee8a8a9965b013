"""Retention per project: ``projects.retention_days`` (NULL keeps traces for ever).

Revision ID: 0021
Revises: 0020
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("projects", sa.Column("retention_days", sa.Integer()))


def downgrade() -> None:
    with op.batch_alter_table("projects") as batch:
        batch.drop_column("retention_days")
