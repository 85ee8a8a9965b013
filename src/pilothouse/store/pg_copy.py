"""PostgreSQL's bulk writes: a batch's rows go by binary ``COPY`` into a temporary staging table of the
connection, then into their table with one set-based ``INSERT ... SELECT`` (spans: ``ON CONFLICT DO
NOTHING``, so a span another writer stored meanwhile is skipped; traces and rollups: the same upsert as
the row-by-row statements, summing into stored rows). The server parses one stream and runs one
statement instead of planning and executing one ``INSERT`` per row."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Connection, MetaData, Table, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.dml import Insert

if TYPE_CHECKING:
    from psycopg.adapt import Dumper

UpsertFactory = Callable[[Any], Insert]  # adds the ON CONFLICT clause to PostgreSQL's INSERT ... SELECT


def _passthrough_dumper(type_oid: int) -> type[Dumper]:
    """A binary dumper for values that are already in PostgreSQL's binary form of ``type_oid``
    (psycopg imported here: a server on SQLite never loads it)."""
    from psycopg.adapt import Dumper
    from psycopg.pq import Format

    class Passthrough(Dumper):
        oid = type_oid
        format = Format.BINARY

        def dump(self, obj: Any) -> bytes:
            return bytes(obj)

    return Passthrough


class StagedWrite:
    """Writes rows (tuples in ``columns`` order) into ``target`` through a staging table. ``upsert``
    adds the conflict clause; ``order_by`` names the columns the rows go in by (lock order);
    ``returning`` names columns the write returns for every row it inserted or updated; ``raw`` names
    columns whose values the rows hold already in PostgreSQL's binary form (bytes), of a type psycopg
    has no binary dumper for (``tsvector``)."""

    def __init__(
        self,
        target: Table,
        columns: Sequence[str],
        upsert: UpsertFactory,
        *,
        order_by: Sequence[str] = (),
        returning: Sequence[str] = (),
        raw: Collection[str] = (),
    ) -> None:
        self.target = target
        self.columns = tuple(columns)
        self.raw = frozenset(raw)
        stage_name = f"ph_stage_{target.name}"
        stage = Table(stage_name, MetaData(), *(Column(c, target.c[c].type) for c in self.columns))
        names = ", ".join(self.columns)
        self._create = (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage_name} ON COMMIT DELETE ROWS AS "
            f"SELECT {names} FROM {target.name} WITH NO DATA"
        )
        self._copy = f"COPY {stage_name} ({names}) FROM STDIN (FORMAT BINARY)"
        rows = select(*(stage.c[c] for c in self.columns)).order_by(*(stage.c[c] for c in order_by))
        base: Any = postgresql.insert(target)
        stmt = upsert(base.from_select(list(self.columns), rows))
        if returning:
            stmt = stmt.returning(*(target.c[c] for c in returning))
        self._move = str(stmt.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
        self._types: list[int] | None = None  # the columns' type oids, which binary COPY needs
        self._dumpers: list[type[Dumper]] = []  # for the raw columns

    def _column_types(self, cursor: Any) -> list[int]:
        if self._types is None:
            cursor.execute(
                "SELECT attname, atttypid::int FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                (self.target.name,),
            )
            oids = dict(cursor.fetchall())
            self._types = [oids[name] for name in self.columns]
            self._dumpers = [_passthrough_dumper(oids[name]) for name in self.raw]
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
            for dumper in self._dumpers:  # by type only: COPY looks them up by the columns' types
                cursor.adapters.register_dumper(None, dumper)
            with cursor.copy(self._copy) as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
            cursor.execute(self._move)
            return cursor.fetchall() if cursor.description is not None else []
