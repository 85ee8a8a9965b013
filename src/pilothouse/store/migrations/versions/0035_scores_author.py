"""Who wrote a score: ``scores.author`` (issue 24: a score's writer cannot be forged).

``key:NAME`` for a score an API key sent (``POST /api/scores``), ``admin`` for the admin secret, a
reviewer's user name for a score written in the web UI or by a review; NULL for scores no caller wrote
(online evaluators) and for every score stored before this migration. Adding a nullable column
rewrites nothing.

Revision ID: 0035
Revises: 0034
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0035"
down_revision = "0034"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("scores", sa.Column("author", sa.String(200)))


def downgrade() -> None:
    with op.batch_alter_table("scores") as batch:
        batch.drop_column("author")
