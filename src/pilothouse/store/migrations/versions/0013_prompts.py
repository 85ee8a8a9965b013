"""The prompt registry: immutable prompt versions, the labels that point at them (each with an optional
canary: a share of its traffic sent to another version), and the audit list
of every change (whose ``seq`` other server processes watch to learn that a label moved).

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "prompt_versions",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("template", sa.Text(), nullable=False),
        sa.Column("config", sa.Text(), nullable=False),
        sa.Column("message", sa.Text()),
        sa.Column("created_by", sa.Text()),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "prompt_labels",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("label", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_by", sa.Text()),
        sa.Column("updated_ns", sa.BigInteger(), nullable=False),
        sa.Column("canary_version", sa.Integer()),
        sa.Column("canary_share", sa.Float()),
    )
    op.create_table(
        "prompt_events",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("version", sa.Integer()),
        sa.Column("label", sa.String(64)),
        sa.Column("previous_version", sa.Integer()),
        sa.Column("actor", sa.Text()),
        sa.Column("detail", sa.Text()),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_prompt_events_name", "prompt_events", ["project_id", "name", "seq"])


def downgrade() -> None:
    op.drop_index("ix_prompt_events_name", table_name="prompt_events")
    op.drop_table("prompt_events")
    op.drop_table("prompt_labels")
    op.drop_table("prompt_versions")
