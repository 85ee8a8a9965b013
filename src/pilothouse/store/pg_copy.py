"""PostgreSQL's bulk span write: a batch's span rows go by binary ``COPY`` into a temporary staging
table of the connection, then into ``spans`` with one set-based ``INSERT ... SELECT``. The server
parses one stream instead of planning and executing one ``INSERT`` per row; a span another writer
stored meanwhile is skipped (``ON CONFLICT DO NOTHING``), as the row-by-row insert skipped it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection

STAGE = "ph_spans_stage"  # per connection (a temporary table), emptied at each commit


class SpanCopier:
    """Writes span rows (tuples in ``columns`` order) through the staging table."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = tuple(columns)
        names = ", ".join(self.columns)
        self._create = (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {STAGE} ON COMMIT DELETE ROWS AS "
            f"SELECT {names} FROM spans WITH NO DATA"
        )
        self._copy = f"COPY {STAGE} ({names}) FROM STDIN (FORMAT BINARY)"
        self._move = (
            f"INSERT INTO spans ({names}) SELECT {names} FROM {STAGE} "
            "ON CONFLICT (trace_pk, span_id) DO NOTHING"
        )
        self._types: list[int] | None = None  # the columns' type oids, which binary COPY needs

    def _column_types(self, cursor: Any) -> list[int]:
        if self._types is None:
            cursor.execute(
                "SELECT attname, atttypid::int FROM pg_attribute "
                "WHERE attrelid = 'spans'::regclass AND attnum > 0 AND NOT attisdropped"
            )
            oids = dict(cursor.fetchall())
            self._types = [oids[name] for name in self.columns]
        return self._types

    def write(self, conn: Connection, rows: Iterable[tuple[Any, ...]]) -> None:
        """COPY ``rows`` into the staging table and move them into ``spans``, in the connection's
        open transaction."""
        driver = conn.connection.driver_connection  # psycopg's connection, in SQLAlchemy's transaction
        assert driver is not None
        with driver.cursor() as cursor:
            # the staging table lives as long as the session (a rolled-back transaction that created
            # it takes it along, hence IF NOT EXISTS each time: one round trip per batch)
            cursor.execute(self._create)
            types = self._column_types(cursor)
            with cursor.copy(self._copy) as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
            cursor.execute(self._move)
