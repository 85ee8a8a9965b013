"""Trace indexes (time, session, end user) end in the trace's integer key instead of its 32-character
id: the key breaks ties between traces that started in the same nanosecond as well, and each entry of
the three indexes is ~25-35 bytes smaller (benchmarks/ingest.py on SQLite: ~100 stored bytes per span).

The same version packs SQLite texts under 4,096 characters as lz4 blocks, which the code before it
cannot read: the downgrade re-packs them as zstd frames.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
import zstandard
from alembic import op
from lz4.block import decompress as lz4_decompress

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_INDEXES = (("ix_traces_time", None), ("ix_traces_session", "session_id"), ("ix_traces_user", "user_id"))
# Columns that hold packed texts on SQLite (store/rows.py pack()).
_PACKED = {
    "spans": ("input", "output", "attributes"),
    "traces": ("input", "output"),
    "eval_items": ("input", "messages", "expected"),
    "eval_results": ("output",),
    "eval_cache": ("output",),
    "judge_calibrations": ("judgements",),
}
_ZSTD_MAGIC = "X'28B52FFD'"


def _recreate(last: str) -> None:
    for name, column in _INDEXES:
        op.drop_index(name, "traces")
        where = None if column is None else sa.text(f"{column} IS NOT NULL")
        columns = ["project_id", *([] if column is None else [column]), "start_ns", last]
        op.create_index(name, "traces", columns, sqlite_where=where, postgresql_where=where)


def _repack_lz4_as_zstd() -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return
    compressor = zstandard.ZstdCompressor(level=1)
    for table, columns in _PACKED.items():
        for column in columns:
            after = 0
            while True:  # a page at a time: memory stays flat in the size of the table
                rows = conn.exec_driver_sql(
                    f"SELECT rowid, {column} FROM {table} WHERE rowid > ? AND typeof({column}) = 'blob' "
                    f"AND substr({column}, 1, 4) != {_ZSTD_MAGIC} ORDER BY rowid LIMIT 5000",
                    (after,),
                ).fetchall()
                if not rows:
                    break
                conn.exec_driver_sql(
                    f"UPDATE {table} SET {column} = ? WHERE rowid = ?",
                    [(compressor.compress(lz4_decompress(value)), rowid) for rowid, value in rows],
                )
                after = rows[-1][0]


def upgrade() -> None:
    _recreate("pk")


def downgrade() -> None:
    _repack_lz4_as_zstd()
    _recreate("id")
