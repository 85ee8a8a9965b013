"""Eval scores keep their scorer's details: ``eval_scores.details``, JSON text (the hallucination
scorer's unsupported spans and whether its judge was called, a judge's verdicts), at most 64 KiB per
score (``pilothouse.domain.score_details``), packed on SQLite as other long texts are. NULL: the scorer
said nothing more, or the score was stored before this revision (those runs render as before).

Revision ID: 0031
Revises: 0030
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0031"
down_revision = "0030"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("eval_scores") as batch:
        batch.add_column(sa.Column("details", sa.Text()))


def downgrade() -> None:
    with op.batch_alter_table("eval_scores") as batch:
        batch.drop_column("details")
