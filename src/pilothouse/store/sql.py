"""The SQL store: one implementation of :class:`pilothouse.store.Store` for SQLite and PostgreSQL."""

from __future__ import annotations

import functools
import itertools
import operator
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import orjson
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    Insert,
    Table,
    bindparam,
    case,
    func,
    select,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from pilothouse.domain.duplicates import StoredCall, duplicate_calls
from pilothouse.domain.money import Money
from pilothouse.domain.queries import (
    Activity,
    ModelMetrics,
    Page,
    SessionSummary,
    TraceDetail,
    TraceQuery,
    TraceSummary,
    encode_cursor,
    encode_sort_cursor,
)
from pilothouse.domain.rollups import ROLLUP_SUMS, RollupSums, add_stored, batch_deltas
from pilothouse.domain.scores import DuplicateScoreId
from pilothouse.domain.sketch import add_counts, quantiles
from pilothouse.domain.traces import ObservationKind, Score, SpanRecord
from pilothouse.store import tables as t
from pilothouse.store.activity import newest_ids
from pilothouse.store.engine import make_engine, upgrade_schema
from pilothouse.store.keys import ProjectsAndKeys
from pilothouse.store.pg_copy import CopyConflict, DirectCopy, StagedWrite, UnnestWrite, stored_spans
from pilothouse.store.rollup_cache import RollupHistogramCache
from pilothouse.store.rows import (
    DIM_ROLLUP_COLUMNS,
    ROLLUP_COLUMNS,
    SPAN_COLUMNS,
    TRACE_COLUMNS,
    dim_rollup_row,
    observation_from_row,
    rollup_row,
    score_from_row,
    score_row,
    span_row,
    trace_from_row,
    trace_row,
    unpack,
    unpack_hist,
)
from pilothouse.store.search import (
    NO_LEXEMES,
    SPANS_WITH_SEARCH,
    TRACE_DOCUMENT_FIELDS,
    TRACES_WITH_SEARCH,
    bytea_may_contain,
    pg_span_vector,
    pg_span_vector_text,
    pg_trace_vector,
    pg_trace_vector_text,
    search_condition,
    search_document,
)
from pilothouse.store.trace_list import (
    SORT_VALUES,
    escape_like,
    scored_traces,
    trace_list_statement,
    walk_sort_index,
)

PREVIEW_CHARS = 300


_NEXT_SPAN_KEY = (
    "SELECT max(coalesce((SELECT max(pk) FROM spans), 0), coalesce((SELECT top FROM span_search_top), 0))"
)
_INDEX_SPANS = "INSERT INTO span_search(rowid, body) VALUES (?, ?)"
_SORTED_UPSERT_TRACES = 200_000  # see SqlStore._write_chunk
_trace_id_of_row = operator.itemgetter(1, 2)  # (pk, project_id, id, ...): the unique index order
_ROLLUP_KINDS = ((t.ROLLUPS, ROLLUP_COLUMNS), (t.DIM_ROLLUPS, DIM_ROLLUP_COLUMNS))  # each keyed by 4 columns
_trace_document = operator.itemgetter(*(TRACE_COLUMNS.index(f) for f in TRACE_DOCUMENT_FIELDS))  # of a row


# The dimension rollups' minute rows are kept this long (older ones are pruned as new ones are written):
# the pages read minutes only at the ends of their 1-hour and 24-hour ranges.
DIM_MINUTES_KEPT_S = 2 * 86400

_MODEL_CALL_KIND_VALUES = frozenset(k.value for k in ObservationKind if k.is_model_call)


def _tag_list(tags: Any) -> list[str]:
    """A stored ``tags`` column (JSON text, or a list) as a list."""
    if not tags:
        return []
    value = orjson.loads(tags) if isinstance(tags, str | bytes) else tags
    return [str(tag) for tag in value] if isinstance(value, list) else []


def usd_sum(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """``SUM`` of a USD column in whole pico-dollars (Money's unit): each value is rounded to its
    pico-dollars (exact: see :mod:`pilothouse.store.rows`) and the database adds integers, exactly."""
    return func.coalesce(func.sum(sql_cast(func.round(column * 1e12), BigInteger)), 0)


@dataclass(frozen=True, slots=True)
class _DriverStatement:
    """A write statement compiled once to positional driver SQL. Rows are tuples in the order of the
    columns it was compiled for; ``order`` rearranges them when the SQL binds in another order."""

    sql: str
    order: Callable[[tuple[Any, ...]], tuple[Any, ...]] | None

    def execute(self, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        """executemany over ``rows``."""
        order = self.order
        conn.exec_driver_sql(self.sql, rows if order is None else [order(r) for r in rows])


_HEX_IDS = re.compile(r"[0-9a-fA-F]+(?:,[0-9a-fA-F]+)*")


def pg_text_array(values: Iterable[str]) -> str:
    """A ``text[]`` parameter as its literal (``{a,b}``), which psycopg passes as it is for PostgreSQL
    to read as the array its place takes (``= ANY(%s)``): psycopg's dumping of a list reads it value by
    value in Python, ~1.5 us per value, ~100 times this. Hex ids (the usual) go unquoted; any other
    value is quoted, its quotes and backslashes escaped."""
    listed = list(values)
    joined = ",".join(listed)
    if _HEX_IDS.fullmatch(joined):
        return "{" + joined + "}"
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in listed) + "}"


class SqlStore(ProjectsAndKeys):
    """Repository over SQLAlchemy Core; no SQL lives outside ``pilothouse.store``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._compress = self.dialect == "sqlite"
        self._insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        self._least = func.least if self.dialect == "postgresql" else func.min
        self._greatest = func.greatest if self.dialect == "postgresql" else func.max
        # Span writes fsync their commit on SQLite too (PostgreSQL's commits are durable by default):
        # the durable mode deletes its spool once a write is committed, which must then survive a
        # power loss. SQLite's WAL at synchronous=NORMAL survives a killed process, not a power loss.
        self.durable_span_writes = False
        # PostgreSQL: span, trace and rollup rows by binary COPY through staging tables and set-based
        # upserts (False: one INSERT per row, kept for comparison: benchmarks/ingest_pg_store.py)
        self.copy_spans = True
        self._dim_minutes_pruned_before = 0  # see _prune_dim_minutes
        self._next_trace_pks_sql: str | None = None  # see _next_trace_pks
        # The batch writer adds each span to the full-text index (SQLite) or gives it its search text
        # (PostgreSQL); False: not, kept for the ingest comparison of benchmarks/search.py
        self.index_search = True
        # the model rollups' histograms a page read, checked against their sums on each read
        self.histogram_cache = RollupHistogramCache()

    # The ingest statements are compiled once, on first use (a command that only reads or runs evals
    # never compiles them), to driver SQL: executemany then skips SQLAlchemy's per-row parameter
    # processing (the hot path).

    @functools.cached_property
    def _span_key(self) -> list[str]:
        # the spans' unique key: with the partition key on PostgreSQL, where spans are partitioned by
        # start (pilothouse.store.partitions); a retried export repeats a span's start
        return ["trace_pk", "span_id"] if self._compress else ["trace_pk", "span_id", "start_ns"]

    @functools.cached_property
    def _span_insert(self) -> _DriverStatement:
        # PostgreSQL without COPY (ingest_copy: false): the writer gives each span its search vector
        vector = sql_cast(bindparam("search_source"), postgresql.TSVECTOR)
        return self._compile(
            self._insert(SPANS_WITH_SEARCH)
            .values(search=vector)
            .on_conflict_do_nothing(index_elements=self._span_key),
            (*SPAN_COLUMNS, "search_source"),
        )

    @functools.cached_property
    def _span_insert_keyed(self) -> _DriverStatement:
        # SQLite: the writer gives new spans their keys, which the full-text index's rows refer to
        return self._compile(
            self._insert(t.spans).on_conflict_do_nothing(index_elements=["trace_pk", "span_id"]),
            ("pk", *SPAN_COLUMNS),
        )

    @functools.cached_property
    def _span_copier(self) -> StagedWrite:
        return StagedWrite(
            SPANS_WITH_SEARCH,
            (*SPAN_COLUMNS, "search"),
            lambda stmt: stmt.on_conflict_do_nothing(index_elements=self._span_key),
            raw=("search",),
        )

    @functools.cached_property
    def _span_inserter(self) -> DirectCopy:
        return DirectCopy(SPANS_WITH_SEARCH, (*SPAN_COLUMNS, "search"), raw=("search",))

    @functools.cached_property
    def _trace_upserter(self) -> UnnestWrite:
        # sorted, as the row-by-row upsert is: concurrent writers lock rows in one order
        return UnnestWrite(
            TRACES_WITH_SEARCH,
            (*TRACE_COLUMNS, "search"),
            self._make_trace_upsert,
            order_by=("project_id", "id"),
            returning=("project_id", "id", "pk"),
        )

    @functools.cached_property
    def _trace_inserter(self) -> DirectCopy:
        return DirectCopy(TRACES_WITH_SEARCH, ("pk", *TRACE_COLUMNS, "search"), raw=("search",))

    @functools.cached_property
    def _rollup_upserters(self) -> dict[Table, UnnestWrite]:
        # PostgreSQL: each rollup's rows (by model and by dimension), summed into stored rows in key order
        return {
            rollup: UnnestWrite(
                rollup,
                columns,
                functools.partial(self._sum_upsert, rollup, ROLLUP_SUMS),
                order_by=columns[:4],
            )
            for rollups, columns in _ROLLUP_KINDS
            for _, rollup in rollups
        }

    @functools.cached_property
    def _trace_upsert(self) -> _DriverStatement:
        # On SQLite the writer gives new traces their keys itself (the transaction holds the write lock
        # from its start, so the next keys are known): no reading them back after the insert.
        if self._compress:
            return self._compile(self._make_trace_upsert(), ("pk", *TRACE_COLUMNS))
        # PostgreSQL: with the trace's own search vector, as tsvector text (_trace_vector)
        vector = sql_cast(bindparam("search_source"), postgresql.TSVECTOR)
        upsert = self._make_trace_upsert(self._insert(TRACES_WITH_SEARCH).values(search=vector))
        return self._compile(upsert, (*TRACE_COLUMNS, "search_source"))

    @functools.cached_property
    def _rollup_upserts(self) -> dict[Table, _DriverStatement]:
        return {
            rollup: self._compile(self._sum_upsert(rollup, ROLLUP_SUMS), columns)
            for rollups, columns in _ROLLUP_KINDS
            for _, rollup in rollups
        }

    def _write_rollup(self, conn: Connection, rollup: Table, rows: list[tuple[Any, ...]]) -> None:
        if rows and not self._compress and self.copy_spans:
            self._rollup_upserters[rollup].write(conn, rows)
        elif rows:
            self._rollup_upserts[rollup].execute(conn, rows)

    @functools.cached_property
    def _in_batch(self) -> str:
        # The keys of a batch's stored traces and their stored span ids (NULL for a trace without
        # spans), then (PostgreSQL) the keys of its new traces: one statement per project and batch
        # each, the trace ids passed as one parameter (a JSON array on SQLite, an array on PostgreSQL).
        return (
            "tr.project_id = ? AND tr.id IN (SELECT value FROM json_each(?))"
            if self._compress
            else "tr.project_id = %s AND tr.id = ANY(%s)"
        )

    @functools.cached_property
    def _seen_sql(self) -> str:
        # SQLite (PostgreSQL's: _SEEN_TRACES and _SEEN_SPANS)
        columns = (
            "tr.id, tr.pk, s.span_id, tr.user_id, tr.tags, s.parent_id, s.key_id, s.kind, s.input_tokens"
        )
        with_spans = "traces tr LEFT JOIN spans s ON s.trace_pk = tr.pk"
        return f"SELECT {columns} FROM {with_spans} WHERE {self._in_batch}"

    @functools.cached_property
    def _keys_sql(self) -> str:
        return f"SELECT tr.id, tr.pk FROM traces tr WHERE {self._in_batch}"

    @functools.cached_property
    def _rollup_selects(self) -> dict[int, str]:
        return {g: self._compile_rollup_select(rollup) for g, rollup in t.ROLLUPS}

    def _compile_rollup_select(self, rollup: Table) -> str:
        stmt = select(
            rollup.c.bucket, rollup.c.model, *(rollup.c[col] for col in ROLLUP_SUMS), rollup.c.latency_hist
        ).where(
            rollup.c.project_id == bindparam("project_id"),
            rollup.c.bucket >= bindparam("start"),
            rollup.c.bucket < bindparam("end"),
        )
        dialect = sqlite.dialect(paramstyle="named") if self.dialect == "sqlite" else self.engine.dialect
        return str(stmt.compile(dialect=dialect))

    @classmethod
    def from_url(cls, url: str, *, migrate: bool = True) -> SqlStore:
        """Open (and by default migrate) the database at ``url``."""
        engine = make_engine(url)
        if migrate:
            upgrade_schema(engine)
        return cls(engine)

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    def _contains(self, column: ColumnElement[Any], text: str) -> ColumnElement[bool]:
        """Case-insensitive substring match on a text column (packed texts unpacked on SQLite). On
        PostgreSQL a span text (``bytea``) matches when its UTF-8 does or when it is packed: the
        database cannot unpack it, so such a match is a candidate that :func:`span_text_matches`
        settles in Python."""
        pattern = escape_like(text)
        if self._compress:
            return func.ph_text(column).like(pattern, escape="\\")
        if column.table is t.spans:
            return bytea_may_contain(column, pattern)
        return column.ilike(pattern, escape="\\")

    # -- write statements ------------------------------------------------------------------------

    def _compile(self, stmt: Insert, columns: Sequence[str]) -> _DriverStatement:
        # Positional parameters and rows as tuples: executemany then skips SQLAlchemy's per-row
        # parameter processing, and sqlite3 binds them about twice as fast as named ones.
        if self.dialect == "sqlite":
            dialect: Any = sqlite.dialect(paramstyle="qmark")
        else:
            dialect = cast(Any, type(self.engine.dialect))(paramstyle="format")  # psycopg: %s
        compiled = stmt.compile(dialect=dialect, column_keys=list(columns))
        names = list(compiled.positiontup or ())
        if sorted(names) != sorted(columns):
            raise RuntimeError(f"statement binds {names}, rows hold {list(columns)}")
        indexes = [columns.index(name) for name in names]
        order = None if indexes == sorted(indexes) else operator.itemgetter(*indexes)
        return _DriverStatement(str(compiled), order)

    def _make_trace_upsert(self, base: Insert | None = None) -> Insert:
        stmt: Any = self._insert(t.traces) if base is None else base
        x, cur = stmt.excluded, stmt.table.c
        keep_first = {c: func.coalesce(cur[c], x[c]) for c in ("model", "root_span_id")}
        latest = {
            c: func.coalesce(x[c], cur[c])
            for c in (
                "user_id",
                "session_id",
                "tags",
                "metadata",
                "environment",
                "release",
                "input",
                "output",
            )
        }
        sums = {
            c: cur[c] + x[c]
            for c in (
                "observation_count",
                "error_count",
                "input_tokens",
                "output_tokens",
                "total_tokens",
                "cost_usd",
                "unpriced_count",
            )
        }
        # A name from the root span (or set explicitly) replaces a provisional name from a child.
        name = case((x.root_span_id.is_not(None), x.name), else_=func.coalesce(cur.name, x.name))
        upsert: Insert = stmt.on_conflict_do_update(
            index_elements=["project_id", "id"],
            set_={
                "name": name,
                "start_ns": self._least(cur.start_ns, x.start_ns),
                "end_ns": self._greatest(cur.end_ns, x.end_ns),
                **keep_first,
                **latest,
                **sums,
            },
        )
        return upsert

    def _sum_upsert(self, table: Table, columns: Sequence[str], base: Insert | None = None) -> Insert:
        stmt: Any = self._insert(table) if base is None else base
        keys = [c.name for c in table.primary_key.columns]
        sums: dict[str, Any] = {c: table.c[c] + stmt.excluded[c] for c in columns}
        sums["latency_hist"] = func.ph_hist_add(table.c.latency_hist, stmt.excluded.latency_hist)
        if "ttft_hist" in table.c:  # NULL when no call of the row was streamed: nothing to add
            ttft, new = table.c.ttft_hist, stmt.excluded.ttft_hist
            sums["ttft_hist"] = case((new.is_(None), ttft), else_=func.ph_hist_add(ttft, new))
        upsert: Insert = stmt.on_conflict_do_update(index_elements=keys, set_=sums)
        return upsert

    # -- ingest ----------------------------------------------------------------------------------

    def _trace_ids(self, trace_ids: Iterable[str]) -> Any:
        """Trace ids as the one parameter of ``_seen_sql`` and ``_keys_sql``: a JSON array on SQLite, an
        array literal on PostgreSQL (:func:`pg_text_array`)."""
        return orjson.dumps(list(trace_ids)).decode() if self._compress else pg_text_array(trace_ids)

    def _seen(self, conn: Connection, project_id: str, trace_ids: Iterable[str]) -> Sequence[Any]:
        """The rows of ``_seen_sql`` for some trace ids of a project: each stored trace's id, key, user
        id and tags with each of its stored spans' id, parent, key id, kind and input tokens (NULLs
        for a trace without spans).

        PostgreSQL: :func:`pilothouse.store.pg_copy.stored_spans`."""
        ids = self._trace_ids(trace_ids)
        if self._compress:
            return conn.exec_driver_sql(self._seen_sql, (project_id, ids)).all()
        return stored_spans(conn, project_id, ids)

    def _unseen(
        self,
        conn: Connection,
        records: Sequence[SpanRecord],
        trace_pks: dict[tuple[str, str], int],
        stored: dict[tuple[str, str], tuple[str | None, list[str]]],
        calls: list[StoredCall],
    ) -> list[SpanRecord]:
        """``records`` without spans already stored or repeated in the batch: an exporter that retries
        an export the server had accepted must not add its counts to the summaries twice. Adds the
        keys of the batch's stored traces to ``trace_pks``, their user id and tags to ``stored``, and their
        stored model calls to ``calls``."""
        by_project: dict[str, set[str]] = {}
        for r in records:
            by_project.setdefault(r.project_id, set()).add(r.observation.trace_id)
        seen: set[tuple[str, str, str]] = set()
        for project_id, trace_ids in by_project.items():
            for trace_id, pk, span_id, user_id, tags, parent_id, key_id, kind, tokens in self._seen(
                conn, project_id, trace_ids
            ):
                if (project_id, trace_id) not in trace_pks and (user_id or tags):
                    stored[project_id, trace_id] = (user_id, _tag_list(tags))
                trace_pks[project_id, trace_id] = pk
                if span_id is not None:
                    seen.add((project_id, trace_id, span_id))
                    if tokens is not None or kind in _MODEL_CALL_KIND_VALUES:
                        calls.append(
                            StoredCall(
                                project_id,
                                trace_id,
                                span_id,
                                parent_id,
                                key_id is not None,
                                model_call=kind in _MODEL_CALL_KIND_VALUES,
                                counted=tokens is not None,
                            )
                        )
        keys = [(r.project_id, r.observation.trace_id, r.observation.id) for r in records]
        if not seen and len(set(keys)) == len(keys):
            return list(records)  # the usual case: every span is new
        fresh = []
        for key, r in zip(keys, records, strict=True):
            if key not in seen:
                seen.add(key)
                fresh.append(r)
        return fresh

    def _new_trace_pks(
        self, conn: Connection, traces: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        """The keys of (project, trace id) pairs, read back after the traces were inserted."""
        by_project: dict[str, list[str]] = {}
        for project_id, trace_id in traces:
            by_project.setdefault(project_id, []).append(trace_id)
        return {
            (project_id, trace_id): pk
            for project_id, trace_ids in by_project.items()
            for trace_id, pk in conn.exec_driver_sql(self._keys_sql, (project_id, self._trace_ids(trace_ids)))
        }

    def write_spans(self, records: Sequence[SpanRecord]) -> None:
        """Store a batch of spans, their trace summaries and rollups in one transaction (spans already
        stored are skipped, so a retried export is counted once)."""
        if records:
            self.write_span_chunks((records,))

    def write_span_chunks(self, chunks: Iterable[Sequence[SpanRecord]]) -> None:
        """:meth:`write_spans` over chunks of records taken one at a time, so that a large batch need
        not be held in memory at once. On SQLite they are all one transaction: each commit rewrites
        (and later checkpoints) every page it touched, and random trace ids touch index pages all
        over the store. On PostgreSQL each chunk commits by itself, which keeps each transaction's
        row locks in one order; a retry skips the spans an earlier chunk stored."""
        if self._compress:
            # The first chunk is made (normalised, by the ingest queue) before the write lock is taken.
            pending = iter(chunks)
            first = next(pending, None)
            if first is None:
                return
            with self.engine.begin() as conn:
                # The write lock first: what _write_chunk reads (stored spans, the largest trace key)
                # then stays true until the commit.
                conn.exec_driver_sql(f"PRAGMA synchronous={'FULL' if self.durable_span_writes else 'NORMAL'}")
                conn.exec_driver_sql("BEGIN IMMEDIATE")
                for chunk in itertools.chain((first,), pending):
                    self._write_chunk(conn, chunk)
        else:
            for chunk in chunks:
                try:
                    with self.engine.begin() as conn:
                        self._write_chunk(conn, chunk, direct=self.copy_spans)
                except CopyConflict:
                    # Another writer stored one of the chunk's new traces or spans since this one read
                    # them: the chunk again, now with them read as stored (their spans skipped, their
                    # counts added once), by the upserts, which merge into what is stored meanwhile.
                    with self.engine.begin() as conn:
                        self._write_chunk(conn, chunk)

    def _write_chunk(self, conn: Connection, records: Sequence[SpanRecord], direct: bool = False) -> None:
        """One transaction's spans, traces and rollups. ``direct`` (PostgreSQL's COPY path): the new
        traces and spans go straight into their tables by COPY (:class:`DirectCopy`), raising
        :class:`CopyConflict` when another writer stored one meanwhile."""
        trace_pks: dict[tuple[str, str], int] = {}
        stored: dict[tuple[str, str], tuple[str | None, list[str]]] = {}
        calls: list[StoredCall] = []
        records = self._unseen(conn, records, trace_pks, stored, calls)
        if not records:
            return
        compress = self._compress
        deltas = batch_deltas(records, stored, duplicate_calls(records, calls))
        # Traces first: their spans refer to them by key. On PostgreSQL sorted, so that concurrent
        # writers take row locks in the same order (no deadlocks). SQLite has one writer: new traces
        # get their keys in the batch's order, so its span rows append to the (trace_pk, span_id)
        # index instead of landing all over it. Once the trace keys pass 200,000 (as many traces stored,
        # but for deleted ones) the trace rows are written in trace-id order all the same: the random
        # trace-id index no longer fits the page cache, and walking it in order is cheaper (compare
        # `python benchmarks/ingest.py --prefill 400000` with a prefill under the threshold).
        traces = deltas.traces.items() if compress else sorted(deltas.traces.items())
        if compress:
            pk = conn.exec_driver_sql("SELECT coalesce(max(pk), 0) FROM traces").scalar_one()
            rows = []
            for key, d in traces:
                known = trace_pks.get(key)
                if known is None:
                    pk += 1
                    known = trace_pks[key] = pk
                rows.append((known, *trace_row(d, compress)))
            if pk > _SORTED_UPSERT_TRACES:
                rows.sort(key=_trace_id_of_row)  # the trace-id index, grown past the page cache, in order
            self._trace_upsert.execute(conn, rows)
        elif self.copy_spans:
            self._write_pg_traces(conn, traces, trace_pks, direct)
        else:
            rows = [trace_row(d, compress) for _, d in traces]
            self._trace_upsert.execute(conn, [(*row, self._trace_vector(row, text=True)) for row in rows])
            trace_pks.update(self._new_trace_pks(conn, deltas.traces.keys() - trace_pks.keys()))
        span_rows = (span_row(r, trace_pks[r.project_id, r.observation.trace_id], compress) for r in records)
        if compress:
            # Keys past any the search index has seen: deleting spans (retention) notes the largest key
            # in span_search_top first, so a deleted span's key is never given again and its index row
            # (which only a 'delete' with its text could remove) matches nothing.
            top = conn.exec_driver_sql(_NEXT_SPAN_KEY).scalar_one()
            keys = range(top + 1, top + 1 + len(records))
            self._span_insert_keyed.execute(conn, [(k, *row) for k, row in zip(keys, span_rows, strict=True)])
            if self.index_search:
                conn.exec_driver_sql(
                    _INDEX_SPANS, [(k, search_document(r)) for k, r in zip(keys, records, strict=True)]
                )
        else:  # each row with its search vector (none: the search benchmark's store without the index)
            indexed, pairs = self.index_search, zip(span_rows, records, strict=True)
            if self.copy_spans:
                vectors = ((*row, pg_span_vector(r) if indexed else NO_LEXEMES) for row, r in pairs)
                (self._span_inserter if direct else self._span_copier).write(conn, vectors)
            else:
                texts = [(*row, pg_span_vector_text(r) if indexed else "") for row, r in pairs]
                self._span_insert.execute(conn, texts)
        binary = not compress and self.copy_spans  # the histograms in binary form (_rollup_upserters)
        for granularity, rollup in t.ROLLUPS:
            rollup_rows = [
                rollup_row(p, b, m, n, r, compress, binary)
                for (g, p, b, m, n), r in sorted(deltas.rollups.items())
                if g == granularity
            ]
            self._write_rollup(conn, rollup, rollup_rows)
        # Minute rows only for the last DIM_MINUTES_KEPT_S (a backfill of old spans writes none).
        kept_from = int(time.time()) // 3600 * 3600 - DIM_MINUTES_KEPT_S
        by_granularity: dict[int, list[tuple[Any, ...]]] = {g: [] for g, _ in t.DIM_ROLLUPS}
        for (g, project, b, dimension, value), r in sorted(
            deltas.dim_rollups.items(), key=operator.itemgetter(0)
        ):
            if g != 60 or b >= kept_from:
                by_granularity[g].append(dim_rollup_row(project, b, dimension, value, r, compress, binary))
        for granularity, rollup in t.DIM_ROLLUPS:
            self._write_rollup(conn, rollup, by_granularity[granularity])
        if kept_from > self._dim_minutes_pruned_before:
            self._prune_dim_minutes(conn, kept_from)

    def _next_trace_pks(self, conn: Connection) -> str:
        """PostgreSQL: the statement that takes the keys of a batch's new traces from the traces' key
        sequence (the sequence named as a constant: a function that looks it up would run per key)."""
        if self._next_trace_pks_sql is None:
            sequence = conn.exec_driver_sql("SELECT pg_get_serial_sequence('traces', 'pk')").scalar_one()
            literal = str(sequence).replace("'", "''")
            self._next_trace_pks_sql = f"SELECT nextval('{literal}'::regclass) FROM generate_series(1, %s)"
        return self._next_trace_pks_sql

    def _trace_vector(self, row: tuple[Any, ...], text: bool = False) -> Any:
        """PostgreSQL: the search vector of a trace row's own fields (binary, or ``text``), which the
        writer gives a new trace (a trigger recomputes it when an update changes those fields:
        migration 0032)."""
        if not self.index_search:
            return "" if text else NO_LEXEMES
        fields = _trace_document(row)
        return pg_trace_vector_text(fields) if text else pg_trace_vector(fields)

    def _write_pg_traces(
        self,
        conn: Connection,
        traces: Iterable[tuple[tuple[str, str], Any]],
        trace_pks: dict[tuple[str, str], int],
        direct: bool,
    ) -> None:
        """PostgreSQL's trace rows (``traces`` in key order), their keys added to ``trace_pks``. New ones
        (``direct``: not stored when the batch read its traces) get keys from the sequence and go in by
        one COPY; the stored ones (all of them without ``direct``) by one set-based upsert
        (:class:`UnnestWrite`), which returns their keys. New rows first, then stored ones, each in key
        order: concurrent writers take their locks in one order."""
        rows = [(key, trace_row(d, False)) for key, d in traces]
        if direct:
            new = [(key, row) for key, row in rows if key not in trace_pks]
            rows = [(key, row) for key, row in rows if key in trace_pks]
            if new:
                pks = [pk for (pk,) in conn.exec_driver_sql(self._next_trace_pks(conn), (len(new),))]
                self._trace_inserter.write(
                    conn,
                    ((pk, *row, self._trace_vector(row)) for pk, (_, row) in zip(pks, new, strict=True)),
                )
                trace_pks.update((key, pk) for pk, (key, _) in zip(pks, new, strict=True))
        if rows:  # the vector as text: it goes in only where the trace is not stored (a rare case)
            upserted = [(*row, self._trace_vector(row, text=True)) for _, row in rows]
            written = self._trace_upserter.write(conn, upserted)
            trace_pks.update(((project_id, trace_id), pk) for project_id, trace_id, pk in written)

    def _prune_dim_minutes(self, conn: Connection, kept_from: int) -> None:
        """Delete the minute rows of the dimension rollups before ``kept_from`` (:data:`DIM_MINUTES_KEPT_S`
        ago, in whole hours): only the ends of the pages' short ranges (1 hour, 24 hours, their buckets a
        minute and a quarter of an hour) read them, and they are most of those rollups' rows. Done at
        most once an hour per process."""
        conn.execute(t.rollup_dim_minute.delete().where(t.rollup_dim_minute.c.bucket < kept_from))
        self._dim_minutes_pruned_before = kept_from

    def add_scores(self, project_id: str, scores: Sequence[Score]) -> None:
        """Store scores of this project's traces; raises :class:`DuplicateScoreId` when one's id is
        already this project's (or twice in ``scores``), and stores none of them then."""
        if not scores:
            return
        ids = [s.id for s in scores]
        if len(set(ids)) < len(ids):
            raise DuplicateScoreId(next(i for i in ids if ids.count(i) > 1))
        try:
            with self.engine.begin() as conn:
                conn.execute(t.scores.insert(), [score_row(project_id, s) for s in scores])
        except IntegrityError:
            with self.engine.connect() as conn:
                taken = conn.execute(
                    select(t.scores.c.id).where(t.scores.c.project_id == project_id, t.scores.c.id.in_(ids))
                ).scalar()
            if taken is None:
                raise
            raise DuplicateScoreId(taken) from None

    # -- queries -----------------------------------------------------------------------------------

    def list_traces(self, project_id: str, query: TraceQuery) -> Page[TraceSummary]:
        """Traces newest first (or sorted by ``query.sort``), filtered, one keyset page at a time."""
        with self.engine.connect() as conn:
            search, by_key = None, False
            if query.search:
                search, by_key = search_condition(conn, self.dialect, query.search, query.limit)
            elif (scored := scored_traces(conn, project_id, query)) is not None:
                search, by_key = scored, True  # the few traces with the score, by key, as a search's
            walk = self._compress and not by_key and walk_sort_index(conn, project_id, query)
            stmt = trace_list_statement(project_id, query, self._compress, search, by_key, walk)
            rows = [r._mapping for r in conn.execute(stmt)]
            more = len(rows) > query.limit
            rows = rows[: query.limit]
            roots = root_texts(conn, [r["pk"] for r in rows])
        data = []
        for row in rows:
            trace = trace_from_row(row)
            root_in, root_out = roots.get(row["pk"], (None, None))
            data.append(
                TraceSummary(
                    trace,
                    _preview(trace.input if trace.input is not None else root_in),
                    _preview(trace.output if trace.output is not None else root_out),
                )
            )
        next_cursor = None
        if more:
            last_row = rows[-1]
            if query.sort == "time":
                next_cursor = encode_cursor(last_row["start_ns"], last_row["id"])
            else:
                sorted_by = SORT_VALUES[query.sort](last_row)
                next_cursor = encode_sort_cursor(query.sort, sorted_by, last_row["start_ns"], last_row["id"])
        return Page(data, next_cursor)

    def get_trace(self, project_id: str, trace_id: str) -> TraceDetail | None:
        """One trace of this project with its observations and scores, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.traces).where(t.traces.c.project_id == project_id, t.traces.c.id == trace_id)
            ).first()
            if row is None:
                return None
            span_rows = conn.execute(
                select(t.spans)
                # no span starts before its trace (the bound prunes PostgreSQL's older partitions)
                .where(t.spans.c.trace_pk == row.pk, t.spans.c.start_ns >= row.start_ns)
                .order_by(t.spans.c.start_ns, t.spans.c.pk)
            )
            observations = [observation_from_row(r._mapping, trace_id) for r in span_rows]
            score_rows = conn.execute(
                select(t.scores)
                .where(t.scores.c.project_id == project_id, t.scores.c.trace_id == trace_id)
                .order_by(t.scores.c.created_ns)
            )
            scores = [score_from_row(r._mapping) for r in score_rows]
        trace = trace_from_row(row._mapping)
        root = next((o for o in observations if o.id == row.root_span_id), None)
        if root is not None and (trace.input is None or trace.output is None):
            trace = replace(
                trace,
                input=trace.input if trace.input is not None else root.input,
                output=trace.output if trace.output is not None else root.output,
            )
        return TraceDetail(trace, observations, scores)

    def observation_exists(self, project_id: str, trace_id: str, observation_id: str | None) -> bool:
        """True if the trace (and the observation, when given) is stored in this project."""
        with self.engine.connect() as conn:
            if observation_id is None:
                stmt = select(t.traces.c.id).where(
                    t.traces.c.project_id == project_id, t.traces.c.id == trace_id
                )
            else:
                stmt = (
                    select(t.spans.c.pk)
                    .join(t.traces, t.traces.c.pk == t.spans.c.trace_pk)
                    .where(
                        t.traces.c.project_id == project_id,
                        t.traces.c.id == trace_id,
                        t.spans.c.span_id == observation_id,
                    )
                )
            return conn.execute(stmt).first() is not None

    def list_sessions(
        self,
        project_id: str,
        limit: int = 50,
        cursor: tuple[int, str] | None = None,
        start_ns: int = 0,
        end_ns: int = 1 << 62,
    ) -> Page[SessionSummary]:
        """Sessions with traces in [start, end), most recently active first."""
        page = self.activity(project_id, "session_id", start_ns, end_ns, limit, cursor)
        data = [
            SessionSummary(
                session_id=a.id,
                trace_count=a.traces,
                start_ns=a.first_ns,
                end_ns=a.end_ns,
                user_ids=a.user_ids,
                total_tokens=a.total_tokens,
                cost_usd=a.cost_usd,
            )
            for a in page.data
        ]
        return Page(data, page.next_cursor)

    def activity(
        self,
        project_id: str,
        column: str,
        start_ns: int,
        end_ns: int,
        limit: int,
        cursor: tuple[int, str] | None,
    ) -> Page[Activity]:
        """Sessions (``column`` session_id) or end users (user_id) with traces in [start, end), most
        recently active first, with their usage there."""
        # Two steps, both through an index: which ids were active last (pilothouse.store.activity),
        # then the sums of only those ids.
        c = t.traces.c
        group = c[column]
        in_range = [c.project_id == project_id, c.start_ns >= start_ns, c.start_ns < end_ns]
        with self.engine.connect() as conn:
            ids = newest_ids(conn, project_id, column, start_ns, end_ns, limit + 1, cursor)
            more = len(ids) > limit
            ids = ids[:limit]
            sums: dict[str, Any] = {}
            if ids:
                sums_stmt = (
                    select(
                        group.label("id"),
                        func.count().label("n"),
                        func.min(c.start_ns).label("first"),
                        func.max(c.end_ns).label("end"),
                        func.sum(c.total_tokens).label("tokens"),
                        usd_sum(c.cost_usd).label("cost"),
                        func.sum(c.error_count).label("errors"),
                        func.min(c.user_id).label("user_min"),
                        func.max(c.user_id).label("user_max"),
                    )
                    .where(*in_range, group.in_([i for i, _ in ids]))
                    .group_by(group)
                )
                sums = {r.id: r for r in conn.execute(sums_stmt)}
        data = []
        for id_, last_ns in ids:
            agg = sums[id_]
            users = tuple(sorted({u for u in (agg.user_min, agg.user_max) if u}))
            data.append(
                Activity(
                    id=id_,
                    traces=int(agg.n),
                    first_ns=int(agg.first),
                    last_ns=last_ns,
                    total_tokens=int(agg.tokens or 0),
                    cost_usd=Money(int(agg.cost or 0)),
                    errors=int(agg.errors or 0),
                    user_ids=users if column == "session_id" else (),
                    end_ns=int(agg.end),
                )
            )
        next_cursor = encode_cursor(ids[-1][1], ids[-1][0]) if more else None
        return Page(data, next_cursor)

    def model_metrics(
        self, project_id: str, start_s: int, end_s: int, granularity_s: int
    ) -> list[ModelMetrics]:
        """Model-call metrics per time bucket and model, read from the rollups (never from spans).

        ``granularity_s`` is a multiple of 60 (minute rollups) or of 3600 (hour rollups)."""
        source = 3600 if granularity_s % 3600 == 0 else 60
        if granularity_s % 60:
            raise ValueError("granularity must be a multiple of 60 seconds")
        # Rows are read as they are (driver-level, no per-row SQLAlchemy processing) and merged here:
        # summing histograms in SQL is slower than this.
        # 30 days by hour is 720 rows per model and span name: they come straight from the driver,
        # without SQLAlchemy's row objects, and PostgreSQL's in its binary format, cheaper to read
        # than text for the histogram arrays (`python benchmarks/query.py --database-url postgresql://...`).
        params = {"project_id": project_id, "start": start_s, "end": end_s}
        with self.engine.connect() as conn:
            raw: Any = conn.connection.driver_connection
            cursor = raw.cursor() if self._compress else raw.cursor(binary=True)
            try:
                cursor.execute(self._rollup_selects[source], params)
                rows = cursor.fetchall()
            finally:
                cursor.close()
        # rows: bucket, model, the sums (ROLLUP_SUMS order), the latency histogram
        end = 2 + len(ROLLUP_SUMS)
        totals: dict[tuple[int, str], list[Any]] = {}
        hists: dict[tuple[int, str], list[int]] = {}
        for row in rows:
            bucket = row[0]
            key = (bucket - bucket % granularity_s, row[1])
            totals[key] = add_stored(totals.get(key), row[2:end])
            seen = hists.get(key)
            hists[key] = unpack_hist(row[end]) if seen is None else add_counts(seen, unpack_hist(row[end]))
        out = []
        for (b, model), values in sorted(totals.items()):
            sums = RollupSums.from_totals(values, hists[(b, model)])
            p50, p95 = quantiles(sums.latency_counts, (0.5, 0.95))
            out.append(ModelMetrics(b, model, sums, p50, p95))
        return out

    def count_spans(self, project_id: str | None = None) -> int:
        """Number of stored spans (of one project, or all)."""
        stmt = select(func.count()).select_from(t.spans)
        if project_id is not None:
            stmt = stmt.where(t.spans.c.project_id == project_id)
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())


def root_texts(conn: Connection, trace_pks: Sequence[int]) -> dict[int, tuple[str | None, str | None]]:
    """The input and output of the root spans of some traces, by trace key."""
    if not trace_pks:
        return {}
    s = t.spans.c
    rows = conn.execute(
        select(s.trace_pk, s.input, s.output).where(s.trace_pk.in_(trace_pks), s.parent_id.is_(None))
    )
    return {r.trace_pk: (unpack(r.input), unpack(r.output)) for r in rows}


def _preview(text: str | None) -> str | None:
    if text is None or len(text) <= PREVIEW_CHARS:
        return text
    return text[:PREVIEW_CHARS] + "…"
