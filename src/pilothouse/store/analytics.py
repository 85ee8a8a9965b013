"""Analytics reads: dashboards and cost breakdowns from the rollups, top traces, sessions, users, text
search within traces, and pages of dataset items and run results. Each is bounded in the rows it touches
(an index range with a limit), so that a page stays fast at millions of spans.

Dashboards read the rollups (by model and name here, by end user, key, prompt version and tag in
:mod:`pilothouse.store.breakdowns`); what the rollups do not hold (TTFT, cache savings) is read from a
sample of traces spread evenly over the range (:meth:`AnalyticsQueries.sample_calls`), never from a scan
of the range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Integer,
    LargeBinary,
    String,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    tuple_,
    union_all,
)
from sqlalchemy.dialects import sqlite

from pilothouse.domain.datasets import DatasetItem
from pilothouse.domain.evals import EvalResult, ScoreRecord
from pilothouse.domain.keys import ApiKey
from pilothouse.domain.money import Money
from pilothouse.domain.queries import Activity, Page
from pilothouse.domain.rollups import ROLLUP_SUMS, RollupSums
from pilothouse.domain.sketch import BUCKETS
from pilothouse.domain.traces import ObservationKind, Score, Trace
from pilothouse.store import tables as t
from pilothouse.store.breakdowns import add_histograms, without_parallel_workers
from pilothouse.store.evals import _item, _result
from pilothouse.store.rows import score_from_row, trace_from_row, unpack
from pilothouse.store.search import span_text_matches
from pilothouse.store.sql import SqlStore, _api_key, root_texts, usd_sum
from pilothouse.store.trace_list import escape_like as _escape_like

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# compiled sampling statements per engine and number of strata
_SAMPLE_SQL: dict[int, dict[int, tuple[str, dict[str, Any]]]] = {}

# "Top traces" sorts a range of up to this many traces; a larger one walks the cost and latency indexes.
# A walk reads ~10 x (the project's traces / the range's) index entries and no row it skips; a sort reads
# every row of the range: at 1,000,000 spans (SQLite) the 24 hours' ~22,000 traces took 64-110 ms sorted
# and 0.6 ms walked, and a walk for 1 hour (~900 traces) 6 ms.
TOP_SORT_TRACES = 2_000

__all__ = ["Activity", "AnalyticsQueries", "RankedTrace", "RollupRow", "SampledCall"]


@dataclass(slots=True)
class RollupRow:
    """Model calls of one (bucket, model, name), summed from the rollups; the latency histogram as an
    array (dashboards add thousands of them)."""

    bucket_s: int
    model: str
    name: str
    sums: RollupSums  # its latency_counts are left empty: latency_hist has them
    latency_hist: npt.NDArray[np.int64]  # counts per latency bucket (pilothouse.domain.sketch), BUCKETS long


@dataclass(frozen=True, slots=True)
class SampledCall:
    """One model call of a sampled trace, with the trace facts breakdowns need."""

    stratum: int  # index of the time range (stratum) the trace was sampled from
    trace_id: str
    start_ns: int
    latency_ms: float
    error: bool
    model: str
    key_id: str | None
    user_id: str | None
    tags: tuple[str, ...]
    prompt: str | None  # "name@version" or "name"
    ttft_ms: float | None
    cost_usd: Money | None
    saved_usd: Money
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int


@dataclass(frozen=True, slots=True)
class RankedTrace:
    """A trace in a top-N list (costliest, slowest)."""

    id: str
    name: str | None
    start_ns: int
    latency_ms: float
    cost_usd: Money | None  # None: unknown (a model call without a price, and nothing priced)
    total_tokens: int
    errors: int
    user_id: str | None


def _call_texts(conn: Any, trace_pks: Sequence[int]) -> dict[int, tuple[str | None, str | None]]:
    """The first model call's input and the last one's output of some traces, by trace key."""
    if not trace_pks:
        return {}
    s = t.spans.c
    rows = conn.execute(
        select(s.trace_pk, s.input, s.output)
        .where(s.trace_pk.in_(list(trace_pks)), s.input_tokens.is_not(None))
        .order_by(s.trace_pk, s.start_ns)
    )
    out: dict[int, tuple[str | None, str | None]] = {}
    for pk, raw_in, raw_out in rows:
        first_in, last_out = out.get(pk, (None, None))
        text_in, text_out = unpack(raw_in), unpack(raw_out)
        out[pk] = (
            first_in if first_in is not None else text_in,
            text_out if text_out is not None else last_out,
        )
    return out


class AnalyticsQueries:
    """Bounded reads for the web UI over a :class:`SqlStore`'s database."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.engine = store.engine
        self._sample_cache = _SAMPLE_SQL.setdefault(id(store.engine), {})

    # -- keys ---------------------------------------------------------------------------------------

    def api_key(self, key_id: str) -> ApiKey | None:
        """A key by id (revoked ones included), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.api_keys).where(t.api_keys.c.id == key_id)).first()
        return _api_key(row._mapping) if row else None

    # -- dashboards ---------------------------------------------------------------------------------

    def rollup_rows(self, project_id: str, start_s: int, end_s: int, granularity_s: int) -> list[RollupRow]:
        """Rollup sums per (bucket of ``granularity_s``, model, name) in [start, end), read from the minute
        rollups when the granularity is not a whole number of hours, with their latency histograms."""
        rows = self.rollup_sums(project_id, start_s, end_s, granularity_s)
        self.add_rollup_histograms(rows, project_id, start_s, end_s, granularity_s)
        return rows

    @staticmethod
    def _rollup_range(project_id: str, start_s: int, end_s: int, granularity_s: int) -> tuple[Any, ...]:
        """The rollup table's columns, the range's conditions and the output bucket of a row."""
        if granularity_s <= 0 or granularity_s % 60:
            raise ValueError("granularity must be a positive multiple of 60 seconds")
        c = (t.rollup_hour if granularity_s % 3600 == 0 else t.rollup_minute).c
        in_range = (c.project_id == project_id, c.bucket >= start_s, c.bucket < end_s)
        return c, in_range, (c.bucket - (c.bucket - start_s) % granularity_s).label("b")

    def rollup_sums(self, project_id: str, start_s: int, end_s: int, granularity_s: int) -> list[RollupRow]:
        """:meth:`rollup_rows` with empty latency histograms (:meth:`add_rollup_histograms` adds them):
        the database adds the sums per output bucket (the cost in whole pico-dollars, exactly:
        ``usd_sum``), so a day of minute rows (~5,000) comes back as a few hundred rows."""
        c, in_range, bucket = self._rollup_range(project_id, start_s, end_s, granularity_s)
        sums = [usd_sum(c[n]) if n == "cost_usd" else func.sum(c[n]) for n in ROLLUP_SUMS]
        stmt = select(bucket, c.model, c.name, *sums).where(*in_range).group_by(bucket, c.model, c.name)
        import numpy as np  # here: the server starts without numpy

        with self.engine.connect() as conn:
            without_parallel_workers(conn)
            summed = conn.execute(stmt).fetchall()
        cost_at = ROLLUP_SUMS.index("cost_usd")
        merged: list[RollupRow] = []
        for b, model, name, *values in summed:
            group = RollupSums()
            for field_name, v in zip(ROLLUP_SUMS, values, strict=True):
                # PostgreSQL's sum of a bigint is a numeric (a Decimal here)
                setattr(group, field_name, float(v or 0) if field_name == "latency_ms_sum" else int(v or 0))
            group.cost_usd = Money(int(values[cost_at] or 0))
            merged.append(RollupRow(int(b), model, name, group, np.zeros(BUCKETS, np.int64)))
        return sorted(merged, key=lambda r: (r.bucket_s, r.model, r.name))

    def add_rollup_histograms(
        self, rows: list[RollupRow], project_id: str, start_s: int, end_s: int, granularity_s: int
    ) -> None:
        """Adds the latency histograms of the same range to ``rows`` (:meth:`rollup_sums`'s), in place:
        all at once in numpy. PostgreSQL sends each array in its binary form (``array_send``), which
        parses ~10x faster than the text form of 50 numbers."""
        c, in_range, bucket = self._rollup_range(project_id, start_s, end_s, granularity_s)
        pg = self.store.dialect == "postgresql"
        hist_column = func.array_send(c.latency_hist, type_=LargeBinary) if pg else c.latency_hist
        with self.engine.connect() as conn:
            without_parallel_workers(conn)
            hist_rows = conn.execute(select(bucket, c.model, c.name, hist_column).where(*in_range)).fetchall()
        index = {(r.bucket_s, r.model, r.name): i for i, r in enumerate(rows)}
        # a row written after the sums were read has no group: it is left out, as if read a moment earlier
        known = [
            (index[key], raw) for b, model, name, raw in hist_rows if (key := (int(b), model, name)) in index
        ]
        hists = add_histograms([i for i, _ in known], [raw for _, raw in known], len(rows), pg)
        for i, row in enumerate(rows):
            row.latency_hist = row.latency_hist + hists[i]

    def _sample_sql(self, strata: int) -> tuple[str, dict[str, Any]]:
        """The sampling statement for ``strata`` time ranges, compiled once per count (building a
        union of a hundred selects in SQLAlchemy costs more than running it)."""
        cached = self._sample_cache.get(strata)
        if cached is not None:
            return cached
        c, s = t.traces.c, t.spans.c
        project = bindparam("project_id", type_=String)
        parts = [
            select(c.pk.label("pk"), literal_column(str(i)).label("stratum"))
            .where(c.project_id == project, c.start_ns >= bindparam(f"s{i}"), c.start_ns < bindparam(f"e{i}"))
            .order_by(c.start_ns.desc())
            .limit(bindparam(f"n{i}", type_=Integer))
            .subquery()
            .select()
            for i in range(strata)
        ]
        sample = (union_all(*parts) if len(parts) > 1 else parts[0]).subquery()
        model_call = or_(
            *(s.kind == literal_column(f"'{k.value}'") for k in ObservationKind if k.is_model_call),
            s.input_tokens.is_not(None),
        )
        stmt = (
            select(
                sample.c.stratum,
                c.id,
                s.start_ns,
                s.end_ns,
                s.status,
                s.model,
                s.request_model,
                s.key_id,
                s.prompt_name,
                s.prompt_version,
                s.ttft_ns,
                s.cost_usd,
                s.saved_usd,
                s.input_tokens,
                s.output_tokens,
                s.cache_read_tokens,
                c.user_id,
                c.tags,
            )
            .select_from(sample.join(t.spans, s.trace_pk == sample.c.pk).join(t.traces, c.pk == sample.c.pk))
            .where(model_call)
        )
        dialect = (
            sqlite.dialect(paramstyle="named") if self.store.dialect == "sqlite" else self.engine.dialect
        )
        compiled = stmt.compile(dialect=dialect)
        # binds without a name of ours (the OFFSET 0 the SQLite dialect adds) keep their compiled value
        defaults = {k: v for k, v in compiled.params.items() if k.startswith("param_")}
        self._sample_cache[strata] = (str(compiled), defaults)
        return self._sample_cache[strata]

    def sample_calls(self, project_id: str, strata: Sequence[tuple[int, int, int, int]]) -> list[SampledCall]:
        """The model calls of the newest ``limit`` traces started in each time range of ``strata``
        ((stratum, start_ns, end_ns, limit) each): a sample spread over a whole range, read through the
        time index. Each call carries the ``stratum`` its trace was sampled from."""
        if not strata:
            return []
        params: dict[str, Any] = {"project_id": project_id}
        parts = -(-len(strata) // 16) * 16  # padded with empty ranges: few statements to compile and keep
        for i, (_, start, end, limit) in enumerate([*strata, *[(0, 0, 0, 0)] * (parts - len(strata))]):
            params[f"s{i}"], params[f"e{i}"], params[f"n{i}"] = start, end, limit
        sql, defaults = self._sample_sql(parts)
        with self.engine.connect() as conn:
            without_parallel_workers(conn)
            rows = conn.exec_driver_sql(sql, {**defaults, **params}).fetchall()
        out = []
        for (
            stratum,
            trace_id,
            start_ns,
            end_ns,
            status,
            model,
            request_model,
            key_id,
            prompt_name,
            prompt_version,
            ttft_ns,
            cost,
            saved,
            tin,
            tout,
            tcache,
            user_id,
            tags,
        ) in rows:
            prompt = f"{prompt_name}@{prompt_version}" if prompt_name and prompt_version else prompt_name
            out.append(
                SampledCall(
                    stratum=strata[int(stratum)][0],
                    trace_id=trace_id,
                    start_ns=start_ns,
                    latency_ms=max(0, end_ns - start_ns) / 1e6,
                    error=status == "error",
                    model=model or request_model or "",
                    key_id=key_id or None,  # "": metered with no key
                    user_id=user_id,
                    tags=tuple(orjson.loads(tags)) if tags else (),
                    prompt=prompt,
                    ttft_ms=None if ttft_ns is None else ttft_ns / 1e6,
                    cost_usd=None if cost is None else Money.from_usd(cost),
                    saved_usd=Money.ZERO if saved is None else Money.from_usd(saved),
                    input_tokens=tin or 0,
                    output_tokens=tout or 0,
                    cache_read_tokens=tcache or 0,
                )
            )
        return out

    def top_traces(
        self,
        project_id: str,
        start_ns: int,
        end_ns: int,
        *,
        limit: int = 10,
        sort_up_to: int = TOP_SORT_TRACES,
    ) -> tuple[list[RankedTrace], list[RankedTrace]]:
        """The costliest and the slowest traces of [start, end), over every trace of the range. A range
        of up to ``sort_up_to`` traces is read and sorted; a larger one walks the cost (latency)
        index from the top, skipping traces outside the range, and stops at ``limit``."""
        c = t.traces.c
        in_range = (c.project_id == project_id, c.start_ns >= start_ns, c.start_ns < end_ns)
        columns = (
            c.id,
            c.name,
            c.start_ns,
            c.end_ns,
            c.cost_usd,
            c.unpriced_count,
            c.total_tokens,
            c.error_count,
            c.user_id,
        )
        latency = c.end_ns - c.start_ns
        with self.engine.connect() as conn:
            counted = select(literal_column("1")).where(*in_range).limit(sort_up_to + 1).subquery()
            many = conn.execute(select(func.count()).select_from(counted)).scalar_one() > sort_up_to
            if many:
                # "+ 0": the range is then a filter, not the index to read (SQLite); the walk reads
                # about limit x (traces of the project / traces of the range) index entries
                walk = (c.project_id == project_id, c.start_ns + 0 >= start_ns, c.start_ns + 0 < end_ns)
                costly_rows = conn.execute(
                    select(*columns).where(*walk).order_by(c.cost_usd.desc()).limit(limit)
                ).fetchall()
                slowest_rows = conn.execute(
                    select(*columns).where(*walk).order_by(latency.desc()).limit(limit)
                ).fetchall()
            else:
                costly_rows = conn.execute(
                    select(*columns).where(*in_range).order_by(c.cost_usd.desc(), c.id).limit(limit)
                ).fetchall()
                slowest_rows = conn.execute(
                    select(*columns).where(*in_range).order_by(latency.desc(), c.id).limit(limit)
                ).fetchall()

        def ranked(rows: Sequence[Any]) -> list[RankedTrace]:
            return [
                RankedTrace(
                    r.id,
                    r.name,
                    r.start_ns,
                    max(0, r.end_ns - r.start_ns) / 1e6,
                    None if r.unpriced_count and not r.cost_usd else Money.from_usd(r.cost_usd),
                    r.total_tokens,
                    r.error_count,
                    r.user_id,
                )
                for r in rows
            ]

        return ranked(costly_rows), ranked(slowest_rows)

    # -- sessions and users -------------------------------------------------------------------------

    def active_sessions(
        self,
        project_id: str,
        start_ns: int,
        end_ns: int,
        limit: int = 50,
        cursor: tuple[int, str] | None = None,
    ) -> Page[Activity]:
        """Sessions with traces in [start, end), most recently active first, with their usage there."""
        return self.store.activity(project_id, "session_id", start_ns, end_ns, limit, cursor)

    def active_users(
        self,
        project_id: str,
        start_ns: int,
        end_ns: int,
        limit: int = 50,
        cursor: tuple[int, str] | None = None,
    ) -> Page[Activity]:
        """End users with traces in [start, end), most recently active first, with their usage there."""
        return self.store.activity(project_id, "user_id", start_ns, end_ns, limit, cursor)

    def session_traces(self, project_id: str, session_id: str, limit: int = 100) -> tuple[list[Trace], bool]:
        """The newest ``limit`` traces of a session, oldest first, with their whole input and output
        (the root span's when the trace has none); the flag is True when older ones were left out."""
        c = t.traces.c
        stmt = (
            select(t.traces)
            .where(c.project_id == project_id, c.session_id == session_id)
            # "+ 0": ordering by the bare column makes SQLite walk the time index instead of the session's
            .order_by((c.start_ns + 0).desc(), c.pk.desc())
            .limit(limit + 1)
        )
        with self.engine.connect() as conn:
            rows = [r._mapping for r in conn.execute(stmt)]
            more = len(rows) > limit
            rows = rows[:limit]
            roots = root_texts(conn, [row["pk"] for row in rows])
            # an app's root span often carries no text: the first model call's input and the last
            # one's output are the turn then
            bare = [
                row["pk"]
                for row in rows
                if (row["input"] is None and roots.get(row["pk"], (None, None))[0] is None)
                or (row["output"] is None and roots.get(row["pk"], (None, None))[1] is None)
            ]
            calls = _call_texts(conn, bare)
        traces = []
        for row in reversed(rows):
            trace = trace_from_row(row)
            root_in, root_out = roots.get(row["pk"], (None, None))
            call_in, call_out = calls.get(row["pk"], (None, None))
            root_in = root_in if root_in is not None else call_in
            root_out = root_out if root_out is not None else call_out
            traces.append(
                replace(
                    trace,
                    input=trace.input if trace.input is not None else root_in,
                    output=trace.output if trace.output is not None else root_out,
                )
            )
        return traces, more

    # -- traces -------------------------------------------------------------------------------------

    def scores_for_traces(self, project_id: str, trace_ids: Sequence[str]) -> dict[str, list[Score]]:
        """The scores of some traces of this project, by trace id, oldest first."""
        if not trace_ids:
            return {}
        sc = t.scores.c
        stmt = (
            select(t.scores)
            .where(sc.project_id == project_id, sc.trace_id.in_(list(trace_ids)))
            .order_by(sc.created_ns)
        )
        out: dict[str, list[Score]] = {}
        with self.engine.connect() as conn:
            for row in conn.execute(stmt):
                score = score_from_row(row._mapping)
                out.setdefault(score.trace_id, []).append(score)
        return out

    def traces_containing(self, project_id: str, trace_ids: Sequence[str], text: str) -> set[str]:
        """Those of ``trace_ids`` whose input or output (or a span's) contains ``text``, ignoring case:
        a text search bounded to a page of candidate traces."""
        if not trace_ids or not text:
            return set()
        c, s = t.traces.c, t.spans.c
        ids = list(trace_ids)

        def contains(column: ColumnElement[Any]) -> ColumnElement[bool]:
            if self.store.dialect == "sqlite":
                return func.ph_text(column).like(_escape_like(text), escape="\\")
            return column.ilike(_escape_like(text), escape="\\")

        with self.engine.connect() as conn:
            found = {
                r[0]
                for r in conn.execute(
                    select(c.id).where(
                        c.project_id == project_id,
                        c.id.in_(ids),
                        or_(contains(c.input), contains(c.output)),
                    )
                )
            }
            rest = [i for i in ids if i not in found]
            if rest and self.store.dialect == "postgresql":
                # span texts are bytea there, packed ones unpacked here (SqlStore._contains)
                found.update(
                    trace_id
                    for trace_id, text_in, text_out in conn.execute(
                        select(c.id, s.input, s.output)
                        .join(t.spans, s.trace_pk == c.pk)
                        .where(c.project_id == project_id, c.id.in_(rest))
                    )
                    if span_text_matches(text, text_in, text_out)
                )
            elif rest:
                found.update(
                    r[0]
                    for r in conn.execute(
                        select(c.id)
                        .join(t.spans, s.trace_pk == c.pk)
                        .where(
                            c.project_id == project_id,
                            c.id.in_(rest),
                            or_(contains(s.input), contains(s.output)),
                        )
                        .distinct()
                    )
                )
        return found

    # -- evals --------------------------------------------------------------------------------------

    def dataset_items(
        self, version_id: str, after: int = 0, limit: int = 50
    ) -> list[tuple[int, DatasetItem]]:
        """(position, item) of a dataset version after position ``after``, at most ``limit``."""
        i = t.eval_items.c
        stmt = (
            select(t.eval_items)
            .where(i.version_id == version_id, i.position > after)
            .order_by(i.position)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [(row.position, _item(row._mapping)) for row in conn.execute(stmt)]

    def run_results(self, run_id: str, after: tuple[int, int] = (0, -1), limit: int = 50) -> list[EvalResult]:
        """Results of a run after (position, epoch) ``after``, in item order, with their scores."""
        r, s = t.eval_results.c, t.eval_scores.c
        stmt = (
            select(t.eval_results)
            .where(r.run_id == run_id, tuple_(r.position, r.epoch) > tuple_(*after))
            .order_by(r.position, r.epoch)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).fetchall()
            scores: dict[tuple[str, int], list[ScoreRecord]] = {}
            if rows:
                score_rows = conn.execute(
                    select(t.eval_scores)
                    .where(s.run_id == run_id, s.item_id.in_(list({row.item_id for row in rows})))
                    .order_by(s.scorer)
                )
                for sr in score_rows:
                    scores.setdefault((sr.item_id, sr.epoch), []).append(
                        ScoreRecord(sr.scorer, sr.value, sr.passed, sr.error, sr.reason)
                    )
        return [_result(row._mapping, tuple(scores.get((row.item_id, row.epoch), ()))) for row in rows]
