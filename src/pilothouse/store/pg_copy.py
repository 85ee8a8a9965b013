"""PostgreSQL's bulk writes: a batch's rows go by binary ``COPY`` into a temporary staging table of the
connection, then into their table with one set-based ``INSERT ... SELECT`` (spans: ``ON CONFLICT DO
NOTHING``, so a span another writer stored meanwhile is skipped; traces and rollups: the same upsert as
the row-by-row statements, summing into stored rows). The server parses one stream and runs one
statement instead of planning and executing one ``INSERT`` per row."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Column, Connection, MetaData, Table, Text, literal_column, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.dml import Insert

TEXT_OID = 25  # PostgreSQL's text type
UpsertFactory = Callable[[Any], Insert]  # adds the ON CONFLICT clause to PostgreSQL's INSERT ... SELECT


class StagedWrite:
    """Writes rows (tuples in ``columns`` order) into ``target`` through a staging table. ``upsert``
    adds the conflict clause; ``order_by`` names the columns the rows go in by (lock order);
    ``returning`` names columns the write returns for every row it inserted or updated."""

    def __init__(
        self,
        target: Table,
        columns: Sequence[str],
        upsert: UpsertFactory,
        *,
        order_by: Sequence[str] = (),
        returning: Sequence[str] = (),
        computed: Mapping[str, str] | None = None,
    ) -> None:
        self.target = target
        self.columns = tuple(columns)
        # computed columns: each row ends with one text per entry, staged as ``NAME_source`` and turned
        # into the column by the SQL expression (``{}`` is the staged text)
        self.computed = dict(computed or {})
        sources = [f"{name}_source" for name in self.computed]
        stage_name = f"ph_stage_{target.name}"
        stage = Table(
            stage_name,
            MetaData(),
            *(Column(c, target.c[c].type) for c in self.columns),
            *(Column(source, Text) for source in sources),
        )
        names = ", ".join(self.columns)
        extra = "".join(f", NULL::text AS {source}" for source in sources)
        self._create = (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage_name} ON COMMIT DELETE ROWS AS "
            f"SELECT {names}{extra} FROM {target.name} WITH NO DATA"
        )
        self._copy = f"COPY {stage_name} ({', '.join([*self.columns, *sources])}) FROM STDIN (FORMAT BINARY)"
        rows = select(
            *(stage.c[c] for c in self.columns),
            *(
                literal_column(expression.format(f"{stage_name}.{source}"))
                for expression, source in zip(self.computed.values(), sources, strict=True)
            ),
        ).order_by(*(stage.c[c] for c in order_by))
        base: Any = postgresql.insert(target)
        stmt = upsert(base.from_select([*self.columns, *self.computed], rows))
        if returning:
            stmt = stmt.returning(*(target.c[c] for c in returning))
        self._move = str(stmt.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
        self._types: list[int] | None = None  # the columns' type oids, which binary COPY needs

    def _column_types(self, cursor: Any) -> list[int]:
        if self._types is None:
            cursor.execute(
                "SELECT attname, atttypid::int FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (self.target.name,),
            )
            oids = dict(cursor.fetchall())
            self._types = [oids[name] for name in self.columns] + [TEXT_OID] * len(self.computed)
        return self._types

    def write(self, conn: Connection, rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """COPY ``rows`` into the staging table and move them into the target, in the connection's
        open transaction; the ``returning`` columns of the rows written (empty without them)."""
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
            return cursor.fetchall() if cursor.description is not None else []
