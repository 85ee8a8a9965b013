"""Human review: reviewers (users with a scrypt password hash), score configs, annotation queues, their
items (with a reviewer's lease), each reviewer's review and scores.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_users",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.Column("disabled_ns", sa.BigInteger()),
        sa.UniqueConstraint("project_id", "username", name="uq_review_users_name"),
    )
    op.create_table(
        "score_configs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("min_value", sa.Float()),
        sa.Column("max_value", sa.Float()),
        sa.Column("categories", sa.Text()),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("project_id", "name", name="uq_score_configs_name"),
    )
    op.create_table(
        "review_queues",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("description", sa.Text()),
        sa.Column("configs", sa.Text(), nullable=False),
        sa.Column("reviews_per_item", sa.Integer(), nullable=False),
        sa.Column("lease_seconds", sa.Integer(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("project_id", "name", name="uq_review_queues_name"),
    )
    op.create_table(
        "review_items",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("queue_id", sa.String(32), nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spans", sa.Text()),
        sa.Column("lease_owner", sa.Text()),
        sa.Column("lease_until_ns", sa.BigInteger()),
        sa.Column("reviews", sa.Integer(), nullable=False),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.UniqueConstraint("queue_id", "trace_id", name="uq_review_items_trace"),
    )
    op.create_index("ix_review_items_queue", "review_items", ["queue_id", "status", "created_ns"])
    op.create_table(
        "reviews",
        sa.Column("item_id", sa.String(32), primary_key=True),
        sa.Column("reviewer", sa.String(200), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("skipped", sa.Boolean(), nullable=False),
        sa.Column("corrected_output", sa.Text()),
        sa.Column("comment", sa.Text()),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "review_scores",
        sa.Column("item_id", sa.String(32), primary_key=True),
        sa.Column("reviewer", sa.String(200), primary_key=True),
        sa.Column("config_name", sa.String(100), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("trace_id", sa.String(32), nullable=False),
        sa.Column("value", sa.Float()),
        sa.Column("string_value", sa.Text()),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_review_scores_config", "review_scores", ["project_id", "config_name"])


def downgrade() -> None:
    for table in (
        "review_scores",
        "reviews",
        "review_items",
        "review_queues",
        "score_configs",
        "review_users",
    ):
        op.drop_table(table)
