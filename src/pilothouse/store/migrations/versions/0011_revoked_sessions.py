"""``revoked_sessions``: the web UI's sessions that logged out. A session cookie is signed, not stored;
logging out records its id here until the cookie would have expired, so that a copy of the old cookie
can do nothing (on every server process, and after a restart).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "revoked_sessions",
        sa.Column("session_id", sa.String(64), primary_key=True),
        sa.Column("expires_ns", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("revoked_sessions")
