"""Eval storage over a :class:`SqlStore`'s database: datasets and their versions, runs, results and
scores, the response cache (curation of dataset items from stored traces: :mod:`trace_items`).

Reads stream in keyset pages, so memory stays flat in the size of a dataset or a run. On SQLite long
texts (outputs, item inputs) are stored packed (compressed), as spans are.
"""

from __future__ import annotations

import functools
import hashlib
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, and_, bindparam, func, literal, select, tuple_
from sqlalchemy.exc import IntegrityError

from pilothouse.domain.datasets import (
    DatasetError,
    DatasetItem,
    DatasetVersion,
    check_dataset_name,
    fingerprint_item,
)
from pilothouse.domain.evals import (
    CachedResponse,
    EvalResult,
    EvalRun,
    RunStatus,
    RunSummary,
    ScoreRecord,
)
from pilothouse.domain.redaction import redact_text
from pilothouse.domain.score_details import details_json
from pilothouse.domain.traces import SpanRecord
from pilothouse.store import tables as t
from pilothouse.store.rows import money_or_none, pack, unpack
from pilothouse.store.sql import SqlStore, _DriverStatement
from pilothouse.store.trace_items import ScoreFilter, TraceItems

__all__ = ["DatasetSummary", "EvalStore", "ScoreFilter"]

_PAGE = 1000
# The columns of the rows the bulk writes (items, results, scores, cached answers) build as tuples.
_ITEM_COLUMNS = (
    "version_id",
    "position",
    "item_id",
    "input",
    "messages",
    "expected",
    "metadata",
    "source_trace_id",
)
_RESULT_COLUMNS = (
    "run_id",
    "item_id",
    "epoch",
    "position",
    "output",
    "error",
    "latency_ms",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "judge_input_tokens",
    "judge_output_tokens",
    "judge_cost_usd",
    "trace_id",
    "cached",
    "created_ns",
)
_SCORE_COLUMNS = ("run_id", "scorer", "item_id", "epoch", "value", "passed", "error", "reason", "details")
_CACHE_COLUMNS = ("key", "output", "input_tokens", "output_tokens", "cost_usd", "latency_ms", "created_ns")


@dataclass(frozen=True, slots=True)
class DatasetSummary:
    """A dataset with its newest version."""

    name: str
    description: str | None
    latest: DatasetVersion


class _Unchanged(Exception):
    def __init__(self, version: DatasetVersion) -> None:
        super().__init__(version.label)
        self.version = version


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value, default=str).decode()


def _unjson(text: str | bytes | None) -> Any:
    return None if text is None else orjson.loads(unpack(text) or "null")


class EvalStore(TraceItems):
    """Datasets, runs, results and the response cache in the store's database (implements
    :class:`pilothouse.domain.evals.RunStore`)."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.engine = store.engine
        self._pack = store.dialect == "sqlite"

    def _text(self, text: str | None) -> str | bytes | None:
        return pack(text) if self._pack else text

    # The bulk writes, compiled once to driver SQL: executemany over tuples skips SQLAlchemy's per-row
    # parameter processing (as the span writer does), which cost more than the rows themselves.

    @functools.cached_property
    def _item_insert(self) -> _DriverStatement:
        return self.store._compile(t.eval_items.insert(), _ITEM_COLUMNS)

    @functools.cached_property
    def _result_insert(self) -> _DriverStatement:
        return self.store._compile(
            self.store._insert(t.eval_results).on_conflict_do_nothing(), _RESULT_COLUMNS
        )

    @functools.cached_property
    def _score_insert(self) -> _DriverStatement:
        return self.store._compile(self.store._insert(t.eval_scores).on_conflict_do_nothing(), _SCORE_COLUMNS)

    @functools.cached_property
    def _cache_insert(self) -> _DriverStatement:
        return self.store._compile(self.store._insert(t.eval_cache).on_conflict_do_nothing(), _CACHE_COLUMNS)

    # -- datasets -----------------------------------------------------------------------------------

    def import_items(
        self,
        project_id: str,
        name: str,
        items: Iterable[DatasetItem],
        *,
        source: str | None = None,
        description: str | None = None,
    ) -> tuple[DatasetVersion, bool]:
        """Store items as the next version of the dataset ``name`` (created if missing), streamed in
        batches in one transaction. When they are the same items as the newest version, nothing is
        stored and that version comes back. Returns (version, created). No items: DatasetError."""
        self.store.ensure_project(project_id)
        attempts = 3 if isinstance(items, Sequence) else 1  # a stream of items can be read once only
        for attempt in range(attempts):
            try:
                with self.engine.begin() as conn:
                    if self._pack:  # SQLite: the write lock first, so the newest version read stays so
                        conn.exec_driver_sql("BEGIN IMMEDIATE")
                    number = self._import(conn, project_id, name, items, source, description)
                break
            except _Unchanged as unchanged:
                return unchanged.version, False
            except IntegrityError:  # another import made the dataset, or its next version, meanwhile
                if attempt + 1 == attempts:
                    raise DatasetError(
                        f"another version of the dataset {name!r} was stored at the same moment; try again"
                    ) from None
        found = self.get_version(project_id, name, number)
        assert found is not None
        return found, True

    def _import(
        self,
        conn: Connection,
        project_id: str,
        name: str,
        items: Iterable[DatasetItem],
        source: str | None,
        description: str | None,
    ) -> int:
        dataset_id = self._dataset_id(conn, project_id, name, description)
        latest = self._latest(conn, dataset_id, name)
        version_id = uuid.uuid4().hex
        number = (latest.version if latest else 0) + 1
        conn.execute(
            t.eval_dataset_versions.insert().values(
                id=version_id,
                dataset_id=dataset_id,
                version=number,
                item_count=0,
                fingerprint="",
                source=source,
                created_ns=time.time_ns(),
            )
        )
        digest = hashlib.sha256()
        count = 0
        batch: list[tuple[Any, ...]] = []
        for item in items:
            count += 1
            fingerprint_item(digest, item)
            batch.append(self._item_row(version_id, count, item))
            if len(batch) >= _PAGE:
                self._insert_items(conn, batch)
                batch = []
        if not count:  # the transaction rolls the new version back
            raise DatasetError(f"no items for the dataset {name!r}: nothing stored")
        self._insert_items(conn, batch)
        fingerprint = digest.hexdigest()
        if latest is not None and latest.fingerprint == fingerprint:
            raise _Unchanged(latest)  # the transaction rolls the new version back
        conn.execute(
            t.eval_dataset_versions.update()
            .where(t.eval_dataset_versions.c.id == version_id)
            .values(item_count=count, fingerprint=fingerprint)
        )
        return number

    def _insert_items(self, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        if not rows:
            return
        try:
            self._item_insert.execute(conn, rows)
        except IntegrityError:
            ids = [r[2] for r in rows]
            raise DatasetError(
                "two items have the same id (ids must be unique in a dataset): "
                + next((i for i in ids if ids.count(i) > 1), "one of " + ", ".join(ids[:3]))
            ) from None

    def _item_row(self, version_id: str, position: int, item: DatasetItem) -> tuple[Any, ...]:
        """An ``eval_items`` row, in :data:`_ITEM_COLUMNS` order."""
        return (
            version_id,
            position,
            item.id,
            self._text(_json(dict(item.input))),
            self._text(_json([dict(m) for m in item.messages]) if item.messages else None),
            self._text(_json(item.expected)),
            _json(dict(item.metadata)) if item.metadata else None,
            item.source_trace_id,
        )

    def _dataset_id(self, conn: Connection, project_id: str, name: str, description: str | None) -> str:
        d = t.eval_datasets
        found = conn.execute(  # locked: two imports of one dataset number their versions in turn
            select(d.c.id).where(d.c.project_id == project_id, d.c.name == name).with_for_update()
        ).first()
        if found is not None:
            return str(found.id)
        check_dataset_name(name)  # only new ones: a dataset stored before the rule stays readable
        dataset_id = uuid.uuid4().hex
        conn.execute(
            d.insert().values(
                id=dataset_id,
                project_id=project_id,
                name=name,
                description=description,
                created_ns=time.time_ns(),
            )
        )
        return dataset_id

    def _latest(self, conn: Connection, dataset_id: str, name: str) -> DatasetVersion | None:
        v = t.eval_dataset_versions
        row = conn.execute(
            select(v).where(v.c.dataset_id == dataset_id).order_by(v.c.version.desc()).limit(1)
        ).first()
        return None if row is None else _version(row._mapping, name)

    def get_version(self, project_id: str, name: str, version: int | None = None) -> DatasetVersion | None:
        """A dataset's version (the newest when ``version`` is None), or None."""
        d, v = t.eval_datasets, t.eval_dataset_versions
        query = (
            select(v)
            .join(d, d.c.id == v.c.dataset_id)
            .where(d.c.project_id == project_id, d.c.name == name)
            .order_by(v.c.version.desc())
            .limit(1)
        )
        if version is not None:
            query = query.where(v.c.version == version)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _version(row._mapping, name)

    def get_version_by_id(self, version_id: str) -> DatasetVersion | None:
        """A dataset version by its id."""
        d, v = t.eval_datasets, t.eval_dataset_versions
        query = select(v, d.c.name.label("dataset_name")).join(d, d.c.id == v.c.dataset_id)
        with self.engine.connect() as conn:
            row = conn.execute(query.where(v.c.id == version_id)).first()
        return None if row is None else _version(row._mapping, row.dataset_name)

    def list_datasets(self, project_id: str) -> list[DatasetSummary]:
        """Every dataset of a project with its newest version, by name."""
        d, v = t.eval_datasets, t.eval_dataset_versions
        newest = (
            select(v.c.dataset_id, func.max(v.c.version).label("version")).group_by(v.c.dataset_id).subquery()
        )
        query = (
            select(v, d.c.name.label("dataset_name"), d.c.description)
            .join(d, d.c.id == v.c.dataset_id)
            .join(newest, and_(newest.c.dataset_id == v.c.dataset_id, newest.c.version == v.c.version))
            .where(d.c.project_id == project_id)
            .order_by(d.c.name)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return [
            DatasetSummary(r.dataset_name, r.description, _version(r._mapping, r.dataset_name)) for r in rows
        ]

    def iter_items(self, version_id: str, *, page: int = _PAGE) -> Iterator[tuple[int, DatasetItem]]:
        """(position, item) of a version in order, a page at a time."""
        i = t.eval_items
        query = (
            select(i)
            .where(i.c.version_id == version_id, i.c.position > bindparam("after"))
            .order_by(i.c.position)
            .limit(page)
        )
        after = 0
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(query, {"after": after}).all()
            for row in rows:
                yield row.position, _item(row._mapping)
            if len(rows) < page:
                return
            after = rows[-1].position

    # -- runs ---------------------------------------------------------------------------------------

    def create_run(
        self,
        project_id: str,
        *,
        name: str | None,
        spec: Mapping[str, Any],
        dataset: str | None,
        dataset_version_id: str | None,
        dataset_version: int | None,
        target: str,
        epochs: int,
        items_total: int | None,
        scorers: Sequence[str],
    ) -> EvalRun:
        """Store a new run, status running."""
        self.store.ensure_project(project_id)
        run = EvalRun(
            id=uuid.uuid4().hex,
            project_id=project_id,
            name=name,
            status=RunStatus.RUNNING,
            spec=dict(spec),
            dataset=dataset,
            dataset_version_id=dataset_version_id,
            dataset_version=dataset_version,
            target=target,
            epochs=epochs,
            items_total=items_total,
            scorers=tuple(scorers),
            created_ns=time.time_ns(),
        )
        with self.engine.begin() as conn:
            conn.execute(
                t.eval_runs.insert().values(
                    id=run.id,
                    project_id=project_id,
                    name=name,
                    status=run.status.value,
                    spec=orjson.dumps(run.spec, default=str).decode(),
                    dataset=dataset,
                    dataset_version_id=dataset_version_id,
                    dataset_version=dataset_version,
                    target=target,
                    epochs=epochs,
                    items_total=items_total,
                    scorers=orjson.dumps(list(scorers)).decode(),
                    created_ns=run.created_ns,
                )
            )
        return run

    def get_run(self, run_id: str) -> EvalRun | None:
        """A run by id."""
        with self.engine.connect() as conn:
            row = conn.execute(select(t.eval_runs).where(t.eval_runs.c.id == run_id)).first()
        return None if row is None else _run(row._mapping)

    def find_run(self, reference: str, project_id: str | None = None) -> EvalRun | None:
        """A run by id or by an unambiguous prefix of its id (at least 6 characters)."""
        run = self.get_run(reference)
        if run is not None or len(reference) < 6 or len(reference) >= 32:
            return run
        query = (
            select(t.eval_runs)
            .where(t.eval_runs.c.id.startswith(reference.lower(), autoescape=True))
            .limit(2)
        )
        if project_id is not None:
            query = query.where(t.eval_runs.c.project_id == project_id)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        return _run(rows[0]._mapping) if len(rows) == 1 else None

    def list_runs(self, project_id: str, limit: int = 20) -> list[EvalRun]:
        """Newest runs first."""
        r = t.eval_runs
        query = select(r).where(r.c.project_id == project_id).order_by(r.c.created_ns.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [_run(row._mapping) for row in conn.execute(query)]

    def set_run_status(self, run_id: str, status: RunStatus, summary: RunSummary | None = None) -> None:
        """Record where a run stands (and its summary)."""
        values: dict[str, Any] = {"status": status.value}
        values["finished_ns"] = None if status is RunStatus.RUNNING else time.time_ns()
        if summary is not None:
            values["summary"] = orjson.dumps(summary.as_dict()).decode()
        with self.engine.begin() as conn:
            conn.execute(t.eval_runs.update().where(t.eval_runs.c.id == run_id).values(**values))

    # -- results ------------------------------------------------------------------------------------

    def write_results(self, results: Sequence[EvalResult]) -> None:
        """Store results and their scores in one transaction (ones already stored are skipped)."""
        if not results:
            return
        text, now = self._text, time.time_ns()
        result_rows = [  # in _RESULT_COLUMNS order
            (
                r.run_id,
                r.item_id,
                r.epoch,
                r.position,
                text(r.output),
                redact_text(r.error) if r.error else None,
                r.latency_ms,
                r.input_tokens,
                r.output_tokens,
                None if r.cost_usd is None else r.cost_usd.usd,
                r.judge_input_tokens,
                r.judge_output_tokens,
                None if r.judge_cost_usd is None else r.judge_cost_usd.usd,
                r.trace_id,
                r.cached,
                r.created_ns or now,
            )
            for r in results
        ]
        score_rows = [  # in _SCORE_COLUMNS order
            (
                r.run_id,
                s.scorer,
                r.item_id,
                r.epoch,
                s.value,
                s.passed,
                # a plugin's exception text can be any size, and hold what it was given
                redact_text(s.error[:2000]) if s.error else None,
                redact_text(s.reason[:2000]) if s.reason else None,
                text(details_json(s.details)),
            )
            for r in results
            for s in r.scores
        ]
        with self.engine.begin() as conn:
            self._result_insert.execute(conn, result_rows)
            if score_rows:
                self._score_insert.execute(conn, score_rows)

    def completed_keys(self, run_id: str) -> set[tuple[str, int]]:
        """(item id, epoch) of every stored result of a run."""
        r = t.eval_results
        with self.engine.connect() as conn:
            rows = conn.execute(select(r.c.item_id, r.c.epoch).where(r.c.run_id == run_id))
            return {(row.item_id, row.epoch) for row in rows}

    def count_results(self, run_id: str) -> int:
        """How many results a run has stored."""
        r = t.eval_results
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(r.c.run_id == run_id)).scalar_one())

    def iter_results(
        self, run_id: str, *, page: int = 500, after: tuple[int, int] = (0, -1)
    ) -> Iterator[EvalResult]:
        """A run's results with their scores, in item order then epoch, a page at a time (those after
        (position, epoch) ``after``)."""
        r, s = t.eval_results, t.eval_scores
        query = (
            select(r)
            .where(
                r.c.run_id == run_id,
                tuple_(r.c.position, r.c.epoch) > tuple_(bindparam("p"), bindparam("e")),
            )
            .order_by(r.c.position, r.c.epoch)
            .limit(page)
        )
        while True:
            with self.engine.connect() as conn:
                rows = conn.execute(query, {"p": after[0], "e": after[1]}).all()
                scores: dict[tuple[str, int], list[ScoreRecord]] = {}
                if rows:
                    ids = list({row.item_id for row in rows})
                    score_rows = conn.execute(
                        select(s).where(s.c.run_id == run_id, s.c.item_id.in_(ids)).order_by(s.c.scorer)
                    )
                    for sr in score_rows:
                        scores.setdefault((sr.item_id, sr.epoch), []).append(_score(sr._mapping))
            for row in rows:
                yield _result(row._mapping, tuple(scores.get((row.item_id, row.epoch), ())))
            if len(rows) < page:
                return
            after = (rows[-1].position, rows[-1].epoch)

    def get_results(
        self,
        run_id: str,
        item_ids: Sequence[str],
        *,
        epochs: int | None = None,
        after: tuple[int, int] | None = None,
        limit: int | None = None,
    ) -> list[EvalResult]:
        """The results (every epoch, or the first ``epochs``) of some items of a run, in item order then
        epoch; with ``after`` (position, epoch) those after it, and at most ``limit``."""
        r, s = t.eval_results, t.eval_scores
        ids = list(item_ids)
        query = select(r).where(r.c.run_id == run_id, r.c.item_id.in_(ids))
        if epochs is not None:
            query = query.where(r.c.epoch < epochs)
        if after is not None:
            query = query.where(
                tuple_(r.c.position, r.c.epoch) > tuple_(literal(after[0]), literal(after[1]))
            )
        query = query.order_by(r.c.position, r.c.epoch)
        if limit is not None:
            query = query.limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
            scores: dict[tuple[str, int], list[ScoreRecord]] = {}
            if rows:  # the scores of those epochs only
                low, high = min(row.epoch for row in rows), max(row.epoch for row in rows)
                score_query = select(s).where(
                    s.c.run_id == run_id, s.c.item_id.in_(ids), s.c.epoch.between(low, high)
                )
                for sr in conn.execute(score_query.order_by(s.c.scorer)):
                    scores.setdefault((sr.item_id, sr.epoch), []).append(_score(sr._mapping))
        return [_result(row._mapping, tuple(scores.get((row.item_id, row.epoch), ()))) for row in rows]

    def get_items(self, version_id: str, item_ids: Sequence[str]) -> dict[str, DatasetItem]:
        """Some items of a dataset version, by id."""
        i = t.eval_items
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(i).where(i.c.version_id == version_id, i.c.item_id.in_(list(item_ids)))
            )
            return {row.item_id: _item(row._mapping) for row in rows}

    def scorer_names(self, run_id: str) -> list[str]:
        """The scorers a run has values for (its spec's order when known)."""
        run = self.get_run(run_id)
        return list(run.scorers) if run else []

    def metric_values(self, run_id: str, scorer: str) -> tuple[dict[str, list[float]], int, frozenset[str]]:
        """One scorer's measured values of a run as ``{item_id: [value per epoch]}`` (epoch order), how
        many values were unmeasured, and the items those belong to (the shape
        :mod:`pilothouse.evals.gate` takes)."""
        s = t.eval_scores
        query = (
            select(s.c.item_id, s.c.value)
            .where(s.c.run_id == run_id, s.c.scorer == scorer)
            .order_by(s.c.item_id, s.c.epoch)
        )
        return _values(self.engine, query)

    def result_values(self, run_id: str, column: str) -> tuple[dict[str, list[float]], int, frozenset[str]]:
        """A target-call column of a run's results (``latency_ms`` or ``cost_usd``) in
        :meth:`metric_values`' shape; a failed call or an unknown value is unmeasured."""
        r = t.eval_results
        if column not in ("latency_ms", "cost_usd"):
            raise ValueError(f"no result column {column!r}")
        value = r.c[column]
        query = (
            select(r.c.item_id, value.label("value"), r.c.error)
            .where(r.c.run_id == run_id)
            .order_by(r.c.item_id, r.c.epoch)
        )
        return _values(self.engine, query)

    def item_metadata(self, version_id: str) -> dict[str, Mapping[str, Any]]:
        """Every item's metadata (an empty mapping when it has none) of a dataset version, by item id."""
        i = t.eval_items
        query = select(i.c.item_id, i.c.metadata).where(i.c.version_id == version_id)
        with self.engine.connect() as conn:
            return {row.item_id: _unjson(row.metadata) or {} for row in conn.execute(query).yield_per(5000)}

    # -- the gate's looks ---------------------------------------------------------------------------

    def gate_look(self, project_id: str, pair_key: str, candidate_run_id: str, settings_key: str = "") -> int:
        """The look a gate of this candidate run with these settings at this pair would be: its recorded
        look, or one more than the looks recorded so far."""
        with self.engine.connect() as conn:
            return self._look(conn, project_id, pair_key, candidate_run_id, settings_key)

    def _look(
        self, conn: Connection, project_id: str, pair_key: str, candidate_run_id: str, settings_key: str
    ) -> int:
        g = t.gate_looks
        where = and_(g.c.project_id == project_id, g.c.pair_key == pair_key)
        this = and_(g.c.candidate_run_id == candidate_run_id, g.c.settings_key == settings_key)
        found = conn.execute(select(g.c.look).where(where, this)).first()
        if found is not None:
            return int(found.look)
        return int(conn.execute(select(func.count()).select_from(g).where(where)).scalar_one()) + 1

    def record_gate_look(
        self,
        project_id: str,
        pair_key: str,
        baseline_run_id: str,
        candidate_run_id: str,
        verdict: str,
        settings_key: str = "",
    ) -> int:
        """Record a gate of this candidate run with these settings at this pair (once: a second gate of
        the same two runs with the same settings is the same look) and return its look number."""
        g = t.gate_looks
        for _ in range(5):  # another process may take the same look number first: count again
            try:
                with self.engine.begin() as conn:
                    look = self._look(conn, project_id, pair_key, candidate_run_id, settings_key)
                    exists = conn.execute(
                        select(g.c.look).where(
                            g.c.project_id == project_id,
                            g.c.pair_key == pair_key,
                            g.c.candidate_run_id == candidate_run_id,
                            g.c.settings_key == settings_key,
                        )
                    ).first()
                    if exists is None:
                        conn.execute(
                            g.insert().values(
                                project_id=project_id,
                                pair_key=pair_key,
                                candidate_run_id=candidate_run_id,
                                settings_key=settings_key,
                                look=look,
                                baseline_run_id=baseline_run_id,
                                verdict=verdict,
                                created_ns=time.time_ns(),
                            )
                        )
                    return look
            except IntegrityError:
                continue
        raise RuntimeError("could not record the gate's look: the store kept changing")

    # -- response cache -----------------------------------------------------------------------------

    def cache_get_many(self, keys: Sequence[str]) -> dict[str, CachedResponse]:
        """The cached target answers of some keys (the keys without one are left out)."""
        if not keys:
            return {}
        c = t.eval_cache
        with self.engine.connect() as conn:
            rows = conn.execute(select(c).where(c.c.key.in_(list(set(keys))))).all()
        return {
            row.key: CachedResponse(
                unpack(row.output) or "",
                row.input_tokens,
                row.output_tokens,
                money_or_none(row.cost_usd),
                row.latency_ms,
            )
            for row in rows
        }

    def cache_put(self, entries: Sequence[tuple[str, CachedResponse]]) -> None:
        """Keep target answers (a key already there keeps its answer)."""
        if not entries:
            return
        now = time.time_ns()
        rows = [  # in _CACHE_COLUMNS order
            (
                key,
                self._text(e.output),
                e.input_tokens,
                e.output_tokens,
                None if e.cost_usd is None else e.cost_usd.usd,
                e.latency_ms,
                now,
            )
            for key, e in dict(entries).items()
        ]
        with self.engine.begin() as conn:
            self._cache_insert.execute(conn, rows)

    def clear_cache(self) -> int:
        """Forget every cached answer; returns how many there were."""
        with self.engine.begin() as conn:
            return int(conn.execute(t.eval_cache.delete()).rowcount or 0)

    def write_spans(self, records: Sequence[SpanRecord]) -> None:
        """Store the spans of in-process target and judge calls (through the trace pipeline's writer)."""
        self.store.write_spans(records)


def _values(engine: Any, query: Any) -> tuple[dict[str, list[float]], int, frozenset[str]]:
    """Rows of (item id, value[, error]) as :meth:`EvalStore.metric_values` returns them: a value of
    None, or an error, is unmeasured."""
    by_item: dict[str, list[float]] = {}
    unmeasured = 0
    unmeasured_items: set[str] = set()
    with engine.connect() as conn:
        sql, params = _compiled(conn, query)
        cursor = conn.connection.cursor()  # the driver's own rows: plain tuples, fetched in C
        try:
            cursor.execute(sql, params)
            rows = cursor.fetchall()
        finally:
            cursor.close()
        if rows and len(rows[0]) == 2:
            # the common case, one measured value per item: built at once (10,000 rows in ~1 ms, not 17)
            single = {item_id: [value] for item_id, value in rows}
            if len(single) == len(rows) and all(type(v[0]) is float for v in single.values()):
                return single, 0, frozenset()
        for row in rows:
            item_id, value = row[0], row[1]
            if value is None or (len(row) > 2 and row[2] is not None):
                unmeasured += 1
                unmeasured_items.add(item_id)
            else:
                by_item.setdefault(item_id, []).append(float(value))
    return by_item, unmeasured, frozenset(unmeasured_items)


def _compiled(conn: Connection, query: Any) -> tuple[str, Any]:
    """A Core select as the driver's SQL and parameters (reading many rows skips SQLAlchemy's rows)."""
    compiled = query.compile(dialect=conn.dialect)
    params = compiled.construct_params()
    if compiled.positiontup is not None:
        return str(compiled), tuple(params[name] for name in compiled.positiontup)
    return str(compiled), params


def _version(row: Mapping[Any, Any], name: str) -> DatasetVersion:
    return DatasetVersion(
        id=row["id"],
        dataset_id=row["dataset_id"],
        name=name,
        version=row["version"],
        item_count=row["item_count"],
        fingerprint=row["fingerprint"],
        source=row["source"],
        created_ns=row["created_ns"],
    )


def _item(row: Mapping[Any, Any]) -> DatasetItem:
    messages = _unjson(row["messages"])
    return DatasetItem(
        id=row["item_id"],
        input=_unjson(row["input"]) or {},
        expected=_unjson(row["expected"]),
        metadata=_unjson(row["metadata"]) or {},
        messages=tuple(messages) if messages is not None else None,
        source_trace_id=row["source_trace_id"],
    )


def _run(row: Mapping[Any, Any]) -> EvalRun:
    summary = _unjson(row["summary"])
    return EvalRun(
        id=row["id"],
        project_id=row["project_id"],
        name=row["name"],
        status=RunStatus(row["status"]),
        spec=_unjson(row["spec"]) or {},
        dataset=row["dataset"],
        dataset_version_id=row["dataset_version_id"],
        dataset_version=row["dataset_version"],
        target=row["target"],
        epochs=row["epochs"],
        items_total=row["items_total"],
        scorers=tuple(_unjson(row["scorers"]) or ()),
        created_ns=row["created_ns"],
        finished_ns=row["finished_ns"],
        summary=RunSummary.from_dict(summary) if summary else None,
    )


def _score(row: Mapping[Any, Any]) -> ScoreRecord:
    """An ``eval_scores`` row (``details`` NULL in runs stored before details were kept)."""
    details = _unjson(row["details"])
    return ScoreRecord(
        row["scorer"], row["value"], row["passed"], row["error"], row["reason"], details if details else None
    )


def _result(row: Mapping[Any, Any], scores: tuple[ScoreRecord, ...]) -> EvalResult:
    return EvalResult(
        run_id=row["run_id"],
        item_id=row["item_id"],
        epoch=row["epoch"],
        position=row["position"],
        output=unpack(row["output"]),
        error=row["error"],
        latency_ms=row["latency_ms"],
        input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        cost_usd=money_or_none(row["cost_usd"]),
        judge_input_tokens=row["judge_input_tokens"],
        judge_output_tokens=row["judge_output_tokens"],
        judge_cost_usd=money_or_none(row["judge_cost_usd"]),
        trace_id=row["trace_id"],
        cached=bool(row["cached"]),
        scores=scores,
        created_ns=row["created_ns"],
    )
