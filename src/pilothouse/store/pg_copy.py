"""PostgreSQL's bulk writes. Rows the writer read as new (new traces, new spans) go by one binary ``COPY``
straight into their table (:class:`DirectCopy`): no staging table, no conflict check per row, and
PostgreSQL inserts them in groups; a key another writer took meanwhile aborts the transaction with
:class:`CopyConflict`, and the writer writes the batch again by upserts. Rows that may meet stored ones
(traces already stored, rollups) are upserted by one ``INSERT ... SELECT ... FROM unnest(...)`` with
one array parameter per column (:class:`UnnestWrite`: the same upsert as the row-by-row statements,
summing into stored rows, in key order). The spans of a batch written again go by ``COPY`` into a
staging table and ``INSERT ... SELECT ... ON CONFLICT DO NOTHING`` (:class:`StagedWrite`).
:func:`stored_spans` is a batch's look-up of its stored traces and spans."""

from __future__ import annotations

import struct
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


class CopyConflict(Exception):
    """A direct ``COPY`` met a row another writer stored meanwhile (a unique key taken): the
    transaction is aborted; write the batch again by the upserts (SqlStore.write_span_chunks)."""


class _Copier:
    """Binary ``COPY`` of rows (tuples in ``columns`` order) into a table of ``target``'s columns; ``raw``
    names columns whose values the rows hold already in PostgreSQL's binary form (bytes), of a type
    psycopg has no binary dumper for (``tsvector``)."""

    def __init__(self, target: Table, columns: Sequence[str], raw: Collection[str]) -> None:
        self.target = target
        self.columns = tuple(columns)
        self.raw = frozenset(raw)
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

    def _copy(self, cursor: Any, table: str, rows: Iterable[tuple[Any, ...]]) -> None:
        types = self._column_types(cursor)
        for dumper in self._dumpers:  # by type only: COPY looks them up by the columns' types
            cursor.adapters.register_dumper(None, dumper)
        with cursor.copy(f"COPY {table} ({', '.join(self.columns)}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(types)
            for row in rows:
                copy.write_row(row)


class DirectCopy(_Copier):
    """Rows that are all new (no stored row has their unique keys, as far as the writer read) by one
    ``COPY`` straight into ``target``: no staging table, no conflict checks per row, and PostgreSQL
    inserts them in groups. Raises :class:`CopyConflict` when a key was taken meanwhile by another
    writer (a unique violation; the transaction is then aborted)."""

    def write(self, conn: Connection, rows: Iterable[tuple[Any, ...]]) -> None:
        """COPY ``rows`` into the target, in the connection's open transaction."""
        from psycopg.errors import UniqueViolation

        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor:
            try:
                self._copy(cursor, self.target.name, rows)
            except UniqueViolation as error:
                raise CopyConflict(str(error)) from error


class StagedWrite(_Copier):
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
        super().__init__(target, columns, raw)
        self._stage = f"ph_stage_{target.name}"
        stage = Table(self._stage, MetaData(), *(Column(c, target.c[c].type) for c in self.columns))
        self._create = (
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {self._stage} ON COMMIT DROP AS "
            f"SELECT {', '.join(self.columns)} FROM {target.name} WITH NO DATA"
        )
        rows = select(*(stage.c[c] for c in self.columns)).order_by(*(stage.c[c] for c in order_by))
        base: Any = postgresql.insert(target)
        stmt = upsert(base.from_select(list(self.columns), rows))
        if returning:
            stmt = stmt.returning(*(target.c[c] for c in returning))
        self._move = str(stmt.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]

    def write(self, conn: Connection, rows: Iterable[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """COPY ``rows`` into the staging table and move them into the target, in the connection's
        open transaction; the ``returning`` columns of the rows written (empty without them)."""
        driver = conn.connection.driver_connection  # psycopg's connection, in SQLAlchemy's transaction
        assert driver is not None
        with driver.cursor() as cursor:
            # the staging table lives as long as the transaction (ON COMMIT DROP: a session's ON COMMIT
            # DELETE ROWS tables are all emptied at each commit that used any temporary table, ~0.3
            # ms each; this one is for the rare batch that meets a span another writer stored)
            cursor.execute(self._create)
            self._copy(cursor, self._stage, rows)
            cursor.execute(self._move)
            return cursor.fetchall() if cursor.description is not None else []


class UnnestWrite:
    """Rows upserted by one ``INSERT ... SELECT ... FROM unnest(...)`` whose parameters are the rows'
    columns, one array each: no staging table. (A session's temporary ``ON COMMIT DELETE ROWS``
    tables are all emptied at each commit of a transaction that used any temporary table: ~0.3 ms
    of PostgreSQL's CPU each, measured, whatever the rows; the rollups' five made every commit cost
    ~1.5 ms, most of a small batch's.) An array-typed column (a histogram: rows of different lengths,
    each given in binary form, as :func:`pilothouse.store.rows.pg_binary_hist` makes it) travels as
    one flat array with each row's offset and length (-1: NULL) and is sliced back; a ``tsvector``
    column as its text. ``upsert``, ``order_by`` and ``returning`` as for
    :class:`StagedWrite`."""

    def __init__(
        self,
        target: Table,
        columns: Sequence[str],
        upsert: UpsertFactory,
        *,
        order_by: Sequence[str] = (),
        returning: Sequence[str] = (),
    ) -> None:
        from sqlalchemy import literal_column, text

        self.columns = tuple(columns)
        dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
        # the columns' types without their collation ("C" of the traces' keys), which an array's cast
        # cannot take; the values take their column's collation as they are inserted
        sql_types = {c: target.c[c].type.compile(dialect=dialect).split(" COLLATE ")[0] for c in self.columns}
        self._arrays = frozenset(c for c, type_ in sql_types.items() if type_.endswith("[]"))
        # a list's binary dumper is chosen by its first value: a whole number among floats must be one
        self._floats = frozenset(c for c, type_ in sql_types.items() if type_ == "FLOAT")
        names: list[str] = []  # the unnest's columns, in order
        types: list[str] = []
        values: list[Any] = []
        for c in self.columns:
            if c in self._arrays:
                names += [f"{c}_o", f"{c}_n"]
                types += ["INTEGER", "INTEGER"]
                flat = f"(__ph_{c}_flat__::{sql_types[c]})"
                values.append(
                    literal_column(
                        f"CASE WHEN q.{c}_n < 0 THEN NULL ELSE {flat}[q.{c}_o + 1 : q.{c}_o + q.{c}_n] END"
                    )
                )
            elif sql_types[c] == "TSVECTOR":
                names.append(c)
                types.append("TEXT")
                values.append(literal_column(f"q.{c}::tsvector"))
            else:
                names.append(c)
                types.append(sql_types[c])
                values.append(literal_column(f"q.{c}"))
        unnest = ", ".join(f"__ph_{n}__::{t}[]" for n, t in zip(names, types, strict=True))
        rows = (
            select(*values)
            .select_from(text(f"unnest({unnest}) AS q({', '.join(names)})"))
            .order_by(*(literal_column(f"q.{c}") for c in order_by))
        )
        base: Any = postgresql.insert(target)
        stmt = upsert(base.from_select(list(self.columns), rows))
        if returning:
            stmt = stmt.returning(*(target.c[c] for c in returning))
        sql = str(stmt.compile(dialect=dialect))
        for name in (*names, *(f"{c}_flat" for c in self._arrays)):
            sql = sql.replace(f"__ph_{name}__", f"%({name})b")  # binary: ~4x cheaper to dump than text
        self._sql = sql

    def write(self, conn: Connection, rows: Sequence[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """Upsert ``rows`` in the connection's open transaction; the ``returning`` columns of the rows
        written (empty without them)."""
        params: dict[str, Any] = {}
        for c, values in zip(self.columns, zip(*rows, strict=True), strict=True):
            if c in self._arrays:
                params[c + "_flat"], params[c + "_o"], params[c + "_n"] = _flatten(values)
            elif c in self._floats:
                params[c] = [None if v is None else float(v) for v in values]
            else:
                params[c] = list(values)
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor:
            cursor.adapters.register_dumper(_Int8Array, _passthrough_dumper(_INT8_ARRAY_OID))
            cursor.execute(self._sql, params)
            return cursor.fetchall() if cursor.description is not None else []


_INT8_ARRAY_OID = 1016
_INT8_ARRAY_HEADER = struct.Struct("!iiIii")  # 1 dimension, no NULLs, int8, its size, lower bound 1
_EMPTY_INT8_ARRAY = struct.pack("!iiI", 0, 0, 20)


class _Int8Array(bytes):
    """A ``bigint[]`` in PostgreSQL's binary form (``array_send``), passed as it is."""


def _flatten(values: Iterable[bytes | None]) -> tuple[_Int8Array, list[int], list[int]]:
    """One-dimensional ``bigint[]`` values in binary form (:func:`pilothouse.store.rows.pg_binary_hist`;
    None: NULL) as one flat ``bigint[]`` and each value's offset and length (-1: NULL) in it: their
    elements (each its length and value, 12 bytes) joined under one header, without reading them."""
    parts: list[bytes] = []
    offsets: list[int] = []
    lengths: list[int] = []
    total = 0
    for value in values:
        offsets.append(total)
        if value is None:
            lengths.append(-1)
            continue
        dimensions, _, _, size, _ = _INT8_ARRAY_HEADER.unpack_from(value) if len(value) >= 20 else (0,) * 5
        if not dimensions:  # an empty array
            lengths.append(0)
            continue
        parts.append(value[_INT8_ARRAY_HEADER.size :])
        lengths.append(size)
        total += size
    flat = _INT8_ARRAY_HEADER.pack(1, 0, 20, total, 1) + b"".join(parts) if total else _EMPTY_INT8_ARRAY
    return _Int8Array(flat), offsets, lengths


# A batch's stored traces, then their stored spans (stored_spans); a trace starts no later than any of
# its spans (its start is the least seen): spans are partitioned by start, and the bound spares the
# probes of the days before it
_STORED_TRACES = (
    "SELECT t.id, t.pk, t.user_id, t.tags, t.start_ns FROM unnest(%s::text[]) AS q(id), LATERAL "
    "(SELECT * FROM traces WHERE project_id = %s AND id = q.id OFFSET 0) t"
)
_STORED_SPANS = (
    "SELECT q.pk, s.span_id, s.parent_id, s.key_id, s.kind, s.input_tokens "
    "FROM unnest(%s::bigint[], %s::bigint[]) AS q(pk, start_ns), LATERAL (SELECT * FROM spans "
    "WHERE trace_pk = q.pk AND start_ns >= q.start_ns OFFSET 0) s"
)


def stored_spans(conn: Connection, project_id: str, trace_ids: str) -> list[tuple[Any, ...]]:
    """Of a project's trace ids (a ``text[]`` literal), each stored trace's id, key, user id and tags
    with each of its stored spans' id, parent, key id, kind and input tokens (NULLs for a trace without
    spans).

    Two statements, the second only when some trace is stored (the usual batch's traces are all new):
    each trace id looked up by the traces' unique key, then those traces' spans by theirs ("OFFSET 0"
    keeps the planner from making the steps one join, which it may plan otherwise). Whatever the
    statistics say: without them (a new store before autovacuum's first ANALYZE, or autovacuum off)
    the join they replace read every trace of the project for each batch (by an index on project_id:
    ~2 ms a batch at 5,000 traces, growing with the store). Each is planned on each run, not prepared
    (psycopg prepares a statement on its 5th run): a plan made while the store was small (a scan of its
    few pages of traces per id) would be kept as the store grows when no ANALYZE invalidates it (~10 ms
    a batch at 6,000 traces, measured)."""
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        cursor.execute(_STORED_TRACES, (trace_ids, project_id), prepare=False)
        traces = cursor.fetchall()
        if not traces:
            return []
        cursor.execute(_STORED_SPANS, ([r[1] for r in traces], [r[4] for r in traces]), prepare=False)
        spans: dict[int, list[tuple[Any, ...]]] = {}
        for trace_pk, *span in cursor.fetchall():
            spans.setdefault(trace_pk, []).append(tuple(span))
    none = [(None, None, None, None, None)]
    return [
        (trace_id, pk, span_id, user_id, tags, parent_id, key_id, kind, tokens)
        for trace_id, pk, user_id, tags, _ in traces
        for span_id, parent_id, key_id, kind, tokens in spans.get(pk, none)
    ]
