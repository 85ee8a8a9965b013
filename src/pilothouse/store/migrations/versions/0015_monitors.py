"""Monitors, their alerts, the leases of background jobs, and an index of scores by name and time.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_scores_created", "scores", ["project_id", "name", "created_ns"])
    op.create_table(
        "monitors",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("score_name", sa.Text()),
        sa.Column("threshold", sa.Float()),
        sa.Column("model", sa.Text()),
        sa.Column("route", sa.Text()),
        sa.Column("prompt_name", sa.Text()),
        sa.Column("prompt_version", sa.Text()),
        sa.Column("shift", sa.Float(), nullable=False),
        sa.Column("arl0", sa.Float(), nullable=False),
        sa.Column("baseline_s", sa.BigInteger(), nullable=False),
        sa.Column("webhook_url", sa.Text()),
        sa.Column("created_ns", sa.BigInteger(), nullable=False),
        sa.Column("silenced_until_ns", sa.BigInteger()),
        sa.Column("state", sa.Text(), nullable=False),
    )
    op.create_index("ix_monitors_project", "monitors", ["project_id", "created_ns"])
    op.create_table(
        "monitor_alerts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("monitor_id", sa.String(32), nullable=False),
        sa.Column("project_id", sa.String(64), nullable=False),
        sa.Column("fired_ns", sa.BigInteger(), nullable=False),
        sa.Column("metric", sa.String(32), nullable=False),
        sa.Column("observed", sa.Float(), nullable=False),
        sa.Column("baseline", sa.Float(), nullable=False),
        sa.Column("samples", sa.Integer(), nullable=False),
        sa.Column("statistic", sa.Float(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("silenced", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("acknowledged_ns", sa.BigInteger()),
        sa.Column("acknowledged_by", sa.Text()),
        sa.Column("delivery", sa.Text()),
    )
    op.create_index("ix_monitor_alerts_project", "monitor_alerts", ["project_id", "fired_ns"])
    op.create_index("ix_monitor_alerts_monitor", "monitor_alerts", ["monitor_id", "status"])
    op.create_table(
        "worker_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("expires_ns", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("worker_leases")
    op.drop_index("ix_monitor_alerts_monitor", "monitor_alerts")
    op.drop_index("ix_monitor_alerts_project", "monitor_alerts")
    op.drop_table("monitor_alerts")
    op.drop_index("ix_monitors_project", "monitors")
    op.drop_table("monitors")
    op.drop_index("ix_scores_created", "scores")
