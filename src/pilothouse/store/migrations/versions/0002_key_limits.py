"""Key limits: model allow-list, requests and tokens per minute.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("models", sa.Text()))  # comma-separated allow-list; NULL: every model
        batch.add_column(sa.Column("rpm", sa.Integer()))
        batch.add_column(sa.Column("tpm", sa.Integer()))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("tpm")
        batch.drop_column("rpm")
        batch.drop_column("models")
