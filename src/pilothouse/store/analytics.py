"""Analytics reads: dashboards and cost breakdowns from the rollups, top traces, sessions, users, text
search within traces, and pages of dataset items and run results. Each is bounded in the rows it touches
(an index range with a limit), so that a page stays fast at millions of spans.

Dashboards read the rollups only (by model and name here, by end user, key, prompt version and tag in
:mod:`pilothouse.store.breakdowns`): every figure, TTFT and cache savings included, is exact at any
number of stored spans, and never a scan of the range.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    LargeBinary,
    and_,
    func,
    literal_column,
    or_,
    select,
    tuple_,
)

from pilothouse.domain.datasets import DatasetItem
from pilothouse.domain.evals import EvalResult, ScoreRecord
from pilothouse.domain.keys import ApiKey
from pilothouse.domain.money import Money
from pilothouse.domain.queries import Activity, Page
from pilothouse.domain.rollups import MONEY_SUMS, ROLLUP_SUMS, RollupSums
from pilothouse.domain.sketch import BUCKETS
from pilothouse.domain.traces import Score, Trace
from pilothouse.store import tables as t
from pilothouse.store.breakdowns import add_histograms, without_parallel_workers
from pilothouse.store.evals import _item, _result, _score
from pilothouse.store.keys import api_key_from_row
from pilothouse.store.rows import score_from_row, trace_from_row, unpack
from pilothouse.store.search import span_text_matches
from pilothouse.store.sql import SqlStore, root_texts, usd_sum
from pilothouse.store.trace_list import escape_like as _escape_like

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# "Top traces" sorts a range of up to this many traces; a larger one walks the cost and latency indexes.
# A walk reads ~10 x (the project's traces / the range's) index entries and no row it skips; a sort reads
# every row of the range: at 1,000,000 spans (SQLite) the 24 hours' ~22,000 traces took 64-110 ms sorted
# and 0.6 ms walked, and a walk for 1 hour (~900 traces) 6 ms.
TOP_SORT_TRACES = 2_000

__all__ = ["Activity", "AnalyticsQueries", "RankedTrace", "RollupRow"]


@dataclass(slots=True)
class RollupRow:
    """Model calls of one (bucket, model, name), summed from the rollups; the latency and TTFT
    histograms as arrays (dashboards add thousands of them)."""

    bucket_s: int
    model: str
    name: str
    sums: RollupSums  # its latency_counts and ttft_counts are left empty: the arrays have them
    latency_hist: npt.NDArray[np.int64]  # counts per latency bucket (pilothouse.domain.sketch), BUCKETS long
    ttft_hist: npt.NDArray[np.int64]  # the streamed calls' time to first token, the same buckets


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

    # -- keys ---------------------------------------------------------------------------------------

    def api_key(self, key_id: str) -> ApiKey | None:
        """A key by id (revoked ones included), or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.api_keys).where(t.api_keys.c.id == key_id)).first()
        return api_key_from_row(row._mapping) if row else None

    # -- dashboards ---------------------------------------------------------------------------------

    def rollup_rows(self, project_id: str, start_s: int, end_s: int, granularity_s: int) -> list[RollupRow]:
        """Rollup sums per (bucket of ``granularity_s``, model, name) in [start, end), read from the minute
        rollups when the granularity is not a whole number of hours, with their latency and TTFT
        histograms."""
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
        """:meth:`rollup_rows` with empty histograms (:meth:`add_rollup_histograms` adds them): the
        database adds the sums per output bucket (amounts in whole pico-dollars, exactly: ``usd_sum``),
        so a day of minute rows (~5,000) comes back as a few hundred rows."""
        c, in_range, bucket = self._rollup_range(project_id, start_s, end_s, granularity_s)
        sums = [usd_sum(c[n]) if n in MONEY_SUMS else func.sum(c[n]) for n in ROLLUP_SUMS]
        stmt = select(bucket, c.model, c.name, *sums).where(*in_range).group_by(bucket, c.model, c.name)
        import numpy as np  # here: the server starts without numpy

        with self.engine.connect() as conn:
            without_parallel_workers(conn)
            summed = conn.execute(stmt).fetchall()
        merged: list[RollupRow] = []
        for b, model, name, *values in summed:
            group = RollupSums()
            for field_name, v in zip(ROLLUP_SUMS, values, strict=True):
                # PostgreSQL's sum of a bigint is a numeric (a Decimal here)
                setattr(group, field_name, float(v or 0) if field_name == "latency_ms_sum" else int(v or 0))
            for field_name in MONEY_SUMS:
                setattr(group, field_name, Money(getattr(group, field_name)))
            empty = np.zeros(BUCKETS, np.int64)
            merged.append(RollupRow(int(b), model, name, group, empty, empty.copy()))
        return sorted(merged, key=lambda r: (r.bucket_s, r.model, r.name))

    def add_rollup_histograms(
        self, rows: list[RollupRow], project_id: str, start_s: int, end_s: int, granularity_s: int
    ) -> None:
        """Adds the latency and TTFT histograms of the same range to ``rows`` (:meth:`rollup_sums`'s),
        in place: those of a row whose sums are as when its histograms were last read come from the
        store's :class:`~pilothouse.store.rollup_cache.RollupHistogramCache`; the others' are read
        (:meth:`rollup_histograms` over their buckets only, then :meth:`merge_rollup_histograms`) and
        kept there. On a 24-hour Overview that reads the newest minutes instead of ~5,000 rows."""
        cache = self.store.histogram_cache
        c, _, _ = self._rollup_range(project_id, start_s, end_s, granularity_s)
        table = c.bucket.table.name

        def key(r: RollupRow) -> Any:
            return (project_id, table, r.bucket_s, min(r.bucket_s + granularity_s, end_s), r.model, r.name)

        def fingerprint(r: RollupRow) -> tuple[Any, ...]:
            return tuple(getattr(r.sums, n) for n in ROLLUP_SUMS)

        missing = []
        for r in rows:
            found = cache.get(key(r), fingerprint(r))
            if found is None:
                missing.append(r)
            else:
                r.latency_hist, r.ttft_hist = found
        if not missing:
            return
        spans = sorted({(r.bucket_s, min(r.bucket_s + granularity_s, end_s)) for r in missing})
        merged: list[tuple[int, int]] = []
        if len(spans) > 50:  # scattered: one range over them all
            spans = [(spans[0][0], spans[-1][1])]
        for lo, hi in spans:  # adjacent buckets as one range
            if merged and merged[-1][1] == lo:
                merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        hist_rows = self.rollup_histograms(project_id, start_s, end_s, granularity_s, merged)
        self.merge_rollup_histograms(missing, hist_rows)
        for r in missing:
            cache.put(key(r), fingerprint(r), r.sums.count, r.latency_hist, r.ttft_hist)

    def rollup_histograms(
        self,
        project_id: str,
        start_s: int,
        end_s: int,
        granularity_s: int,
        buckets: Sequence[tuple[int, int]] | None = None,
    ) -> list[Any]:
        """The stored rows' latency and TTFT histograms of a range as they come (bucket, model, name,
        latency, TTFT), for :meth:`merge_rollup_histograms`; ``buckets``: only those in these
        [start, end) parts of the range. PostgreSQL sends each array in its binary form
        (``array_send``), which parses ~10x faster than the text form of 50 numbers."""
        c, in_range, bucket = self._rollup_range(project_id, start_s, end_s, granularity_s)
        if buckets is not None:
            in_range = (*in_range, or_(*(and_(c.bucket >= lo, c.bucket < hi) for lo, hi in buckets)))
        pg = self.store.dialect == "postgresql"

        def sent(column: Any) -> Any:
            return func.array_send(column, type_=LargeBinary) if pg else column

        with self.engine.connect() as conn:
            without_parallel_workers(conn)
            return list(
                conn.execute(
                    select(bucket, c.model, c.name, sent(c.latency_hist), sent(c.ttft_hist)).where(*in_range)
                ).fetchall()
            )

    def merge_rollup_histograms(self, rows: list[RollupRow], hist_rows: Sequence[Any]) -> None:
        """Adds :meth:`rollup_histograms`' rows into ``rows`` (:meth:`rollup_sums`'s, same range), in
        place, all at once in numpy."""
        pg = self.store.dialect == "postgresql"
        index = {(r.bucket_s, r.model, r.name): i for i, r in enumerate(rows)}
        # a row written after the sums were read has no group: it is left out, as if read a moment
        # earlier (and one written between the two reads counts in the sums without its histogram)
        known = [
            (index[key], latency, ttft)
            for b, model, name, latency, ttft in hist_rows
            if (key := (int(b), model, name)) in index
        ]
        hists = add_histograms([i for i, _, _ in known], [raw for _, raw, _ in known], len(rows), pg)
        streamed = [(i, raw) for i, _, raw in known if raw]  # NULL: no streamed call in the row
        ttfts = add_histograms([i for i, _ in streamed], [raw for _, raw in streamed], len(rows), pg)
        for i, row in enumerate(rows):
            row.latency_hist = row.latency_hist + hists[i]
            row.ttft_hist = row.ttft_hist + ttfts[i]

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
                    scores.setdefault((sr.item_id, sr.epoch), []).append(_score(sr._mapping))
        return [_result(row._mapping, tuple(scores.get((row.item_id, row.epoch), ()))) for row in rows]
