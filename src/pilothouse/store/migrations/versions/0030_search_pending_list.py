"""PostgreSQL: the spans' full-text index ``ix_spans_search`` (GIN, on the partitioned ``spans``) gets a
pending list of at most 256 kB per partition (``gin_pending_list_limit``) instead of the server's
default 4 MB. A GIN index takes new rows into that unsorted list first and merges it into the index
once it is full; the list's pages are reused after a merge but never given back, so every partition
kept up to 4 MB of them: ~200 of the ~270 bytes the index took per span at 20,000 spans in a day's
partition. A partitioned index takes a storage parameter only when it is created (``ALTER INDEX ...
SET`` is refused on it), and the partitions created later (the retention job's days:
:func:`pilothouse.store.partitions.create_day`) copy the parameter from it, so the index is built
again: a read of every stored span's vector (minutes on a store of tens of millions of spans; writes
of spans wait meanwhile). SQLite is unchanged.

Revision ID: 0030
Revises: 0029
"""

from __future__ import annotations

from alembic import op

revision = "0030"
down_revision = "0029"
branch_labels = None
depends_on = None

PENDING_LIST_KB = 256


def _rebuild(options: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    bind.exec_driver_sql("DROP INDEX ix_spans_search")
    bind.exec_driver_sql(f"CREATE INDEX ix_spans_search ON spans USING gin (search){options}")


def upgrade() -> None:
    _rebuild(f" WITH (gin_pending_list_limit = {PENDING_LIST_KB})")


def downgrade() -> None:
    _rebuild("")
