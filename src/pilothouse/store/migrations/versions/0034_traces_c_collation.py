"""The traces' indexed text columns in the "C" collation, and the traces' search index with a smaller
pending list (issue 26: PostgreSQL's CPU per traced gateway call, bytes per span).

PostgreSQL only; what is stored, found and shown stays the same.

- ``traces.project_id``, ``id``, ``session_id``, ``user_id``, ``environment`` and ``release`` (the text
  columns of the traces' B-tree indexes: ``uq_traces_id``, ``ix_traces_time``, ``_session``, ``_user``,
  ``_environment``, ``_release``, ``_cost``, ``_latency``, ``_tokens``) compare in the "C" collation:
  byte by byte (``memcmp``), instead of the database's collation, which PostgreSQL 15 compares with
  ``strcoll`` after copying both strings (``C.UTF-8`` included: ~2-3% of a writing backend's CPU).
  Equality is the same in every deterministic collation, so every query finds the same rows; a
  comparison of one of these columns with a value or a column of the default collation takes the
  column's "C" (an implicit collation beats the default), so the indexes still serve every query.
  Ordering by one of them is by code point: on a ``C.UTF-8`` database the same order as before; on
  a database of a language's collation (``en_US.UTF-8``) ids that differ in case or punctuation may
  come in another order (the Users and Sessions pages order by time first; the code point order is
  the one their Python side already uses). The table is not rewritten; the indexes on these columns
  are built again (minutes at tens of millions of traces; writes wait).
- ``ix_traces_search`` (GIN, not partitioned) keeps a pending list of at most 256 kB
  (``gin_pending_list_limit``) instead of the server's 4 MB, as the spans' index does since 0030:
  a plain ``ALTER INDEX ... SET``, no rebuild; the pages a larger list took are reused, not given
  back (until a ``REINDEX`` or ``VACUUM FULL``).

Revision ID: 0034
Revises: 0033
"""

from __future__ import annotations

from alembic import op

revision = "0034"
down_revision = "0033"
branch_labels = None
depends_on = None

# the columns and their types, as tables.py declares them
C_COLUMNS = (
    ("project_id", "varchar(64)"),
    ("id", "varchar(32)"),
    ("session_id", "text"),
    ("user_id", "text"),
    ("environment", "text"),
    ("release", "text"),
)
PENDING_LIST_KB = 256  # that of 0030's ix_spans_search


def _collate(collation: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    changes = ", ".join(f"ALTER COLUMN {c} TYPE {type_} COLLATE {collation}" for c, type_ in C_COLUMNS)
    bind.exec_driver_sql(f"ALTER TABLE traces {changes}")  # one statement: each index built once


def upgrade() -> None:
    _collate('"C"')
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER INDEX ix_traces_search SET (gin_pending_list_limit = {PENDING_LIST_KB})")


def downgrade() -> None:
    _collate('pg_catalog."default"')
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER INDEX ix_traces_search RESET (gin_pending_list_limit)")
