"""Human review over a :class:`SqlStore`'s database: reviewers, score configs, annotation queues and
their items, reviews and their scores. A reviewer claims an item with a lease (a compare-and-set
``UPDATE``, the same on SQLite and PostgreSQL), so two reviewers never hold one item at once."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, delete, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError

from pilothouse.domain.review import (
    ItemStatus,
    Review,
    ReviewError,
    ReviewItem,
    ReviewQueue,
    ScoreConfig,
    ScoreKind,
)
from pilothouse.domain.traces import Score, ScoreDataType, ScoreSource
from pilothouse.store import tables as t
from pilothouse.store.rows import score_row
from pilothouse.store.sql import SqlStore

__all__ = ["NewItem", "ReviewStore"]

NewItem = tuple[str, str, str, tuple[tuple[int, int], ...]]  # trace id, reason, source, spans
_CLAIM_CANDIDATES = 20  # items looked at per claim; another reviewer may take each first


def _id() -> str:
    return uuid.uuid4().hex


def _config(row: Any) -> ScoreConfig:
    return ScoreConfig(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        kind=ScoreKind(row.kind),
        description=row.description or "",
        min_value=row.min_value,
        max_value=row.max_value,
        categories=tuple(orjson.loads(row.categories)) if row.categories else (),
        created_ns=row.created_ns,
    )


def _queue(row: Any) -> ReviewQueue:
    return ReviewQueue(
        id=row.id,
        project_id=row.project_id,
        name=row.name,
        description=row.description or "",
        config_names=tuple(orjson.loads(row.configs)),
        reviews_per_item=row.reviews_per_item,
        lease_seconds=row.lease_seconds,
        created_ns=row.created_ns,
    )


def _item(row: Any) -> ReviewItem:
    return ReviewItem(
        id=row.id,
        project_id=row.project_id,
        queue_id=row.queue_id,
        trace_id=row.trace_id,
        reason=row.reason or "",
        source=row.source,
        status=ItemStatus(row.status),
        spans=tuple((int(a), int(b)) for a, b in orjson.loads(row.spans)) if row.spans else (),
        lease_owner=row.lease_owner,
        lease_until_ns=row.lease_until_ns,
        reviews=row.reviews,
        created_ns=row.created_ns,
    )


def mirrored_score_id(item_id: str, reviewer: str, config_name: str) -> str:
    """The id of the trace score a reviewer's answer is copied to (one per item, reviewer, config)."""
    digest = hashlib.sha256(f"{item_id}\x00{reviewer}\x00{config_name}".encode()).hexdigest()
    return "rv-" + digest[:29]


class ReviewStore:
    """Stored review state of every project; each method names the project it reads or writes."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.engine = store.engine

    # -- score configs and queues --------------------------------------------------------------------

    def add_config(self, config: ScoreConfig) -> None:
        """Store a new score config; :class:`ReviewError` when the name is taken."""
        self.store.ensure_project(config.project_id)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    t.score_configs.insert().values(
                        id=config.id,
                        project_id=config.project_id,
                        name=config.name,
                        kind=config.kind.value,
                        description=config.description or None,
                        min_value=config.min_value,
                        max_value=config.max_value,
                        categories=orjson.dumps(list(config.categories)).decode()
                        if config.categories
                        else None,
                        created_ns=config.created_ns,
                    )
                )
        except IntegrityError:
            raise ReviewError(f"there is already a score config {config.name!r}") from None

    def list_configs(self, project_id: str, names: Sequence[str] | None = None) -> list[ScoreConfig]:
        """The project's score configs by name (only ``names`` when given)."""
        c = t.score_configs
        query = select(c).where(c.c.project_id == project_id).order_by(c.c.name)
        if names is not None:
            query = query.where(c.c.name.in_(list(names)))
        with self.engine.connect() as conn:
            return [_config(r) for r in conn.execute(query)]

    def add_queue(self, queue: ReviewQueue) -> None:
        """Store a new queue; :class:`ReviewError` when the name is taken."""
        self.store.ensure_project(queue.project_id)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    t.review_queues.insert().values(
                        id=queue.id,
                        project_id=queue.project_id,
                        name=queue.name,
                        description=queue.description or None,
                        configs=orjson.dumps(list(queue.config_names)).decode(),
                        reviews_per_item=queue.reviews_per_item,
                        lease_seconds=queue.lease_seconds,
                        created_ns=queue.created_ns,
                    )
                )
        except IntegrityError:
            raise ReviewError(f"there is already a queue {queue.name!r}") from None

    def get_queue(self, project_id: str, name: str) -> ReviewQueue | None:
        """A queue by name, or None."""
        q = t.review_queues
        with self.engine.connect() as conn:
            row = conn.execute(select(q).where(q.c.project_id == project_id, q.c.name == name)).first()
        return None if row is None else _queue(row)

    def queue_names(self, project_id: str, limit: int = 200) -> list[str]:
        """The project's queue names, sorted (no counts: cheap enough for every trace-list page)."""
        q = t.review_queues
        with self.engine.connect() as conn:
            query = select(q.c.name).where(q.c.project_id == project_id).order_by(q.c.name).limit(limit)
            return list(conn.execute(query).scalars())

    def get_queue_by_id(self, project_id: str, queue_id: str) -> ReviewQueue | None:
        """A queue of the project by id, or None."""
        q = t.review_queues
        with self.engine.connect() as conn:
            row = conn.execute(select(q).where(q.c.project_id == project_id, q.c.id == queue_id)).first()
        return None if row is None else _queue(row)

    def list_queues(self, project_id: str) -> list[tuple[ReviewQueue, dict[str, int]]]:
        """The project's queues by name, each with its item counts per status."""
        q, i = t.review_queues, t.review_items
        with self.engine.connect() as conn:
            queues = [
                _queue(r)
                for r in conn.execute(select(q).where(q.c.project_id == project_id).order_by(q.c.name))
            ]
            counts: dict[str, dict[str, int]] = {}
            for row in conn.execute(
                select(i.c.queue_id, i.c.status, func.count())
                .where(i.c.project_id == project_id)
                .group_by(i.c.queue_id, i.c.status)
            ):
                counts.setdefault(row[0], {})[row[1]] = int(row[2])
        return [
            (queue, {s.value: counts.get(queue.id, {}).get(s.value, 0) for s in ItemStatus})
            for queue in queues
        ]

    # -- items ----------------------------------------------------------------------------------------

    def existing_traces(self, project_id: str, trace_ids: Sequence[str]) -> set[str]:
        """Which of ``trace_ids`` are stored traces of the project."""
        tr = t.traces
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(trace_ids), 500):
                chunk = list(trace_ids[start : start + 500])
                found.update(
                    conn.execute(
                        select(tr.c.id).where(tr.c.project_id == project_id, tr.c.id.in_(chunk))
                    ).scalars()
                )
        return found

    def add_items(self, queue: ReviewQueue, items: Iterable[NewItem]) -> int:
        """Put traces in the queue (a trace already in it stays as it is); returns how many were new."""
        rows = []
        now = time.time_ns()
        for trace_id, reason, source, spans in items:
            rows.append(
                {
                    "id": _id(),
                    "project_id": queue.project_id,
                    "queue_id": queue.id,
                    "trace_id": trace_id,
                    "reason": reason or None,
                    "source": source,
                    "status": ItemStatus.PENDING.value,
                    "spans": orjson.dumps([list(s) for s in spans]).decode() if spans else None,
                    "reviews": 0,
                    "created_ns": now,
                }
            )
            now += 1  # keeps the order they were given in
        if not rows:
            return 0
        statement = (
            self.store._insert(t.review_items)
            .on_conflict_do_nothing(index_elements=["queue_id", "trace_id"])
            .returning(t.review_items.c.id)
        )
        with self.engine.begin() as conn:
            return len(conn.execute(statement, rows).all())

    def get_item(self, project_id: str, item_id: str) -> ReviewItem | None:
        """An item of the project, or None."""
        i = t.review_items
        with self.engine.connect() as conn:
            row = conn.execute(select(i).where(i.c.project_id == project_id, i.c.id == item_id)).first()
        return None if row is None else _item(row)

    def list_items(
        self, queue: ReviewQueue, status: ItemStatus | None = None, limit: int = 100
    ) -> list[ReviewItem]:
        """The queue's items, oldest first."""
        i = t.review_items
        query = select(i).where(i.c.queue_id == queue.id).order_by(i.c.created_ns, i.c.id).limit(limit)
        if status is not None:
            query = query.where(i.c.status == status.value)
        with self.engine.connect() as conn:
            return [_item(r) for r in conn.execute(query)]

    def claim(self, queue: ReviewQueue, reviewer: str, now_ns: int | None = None) -> ReviewItem | None:
        """The next item for ``reviewer``, leased to them for the queue's lease time: one they already
        hold first, else the oldest pending item nobody holds (or whose lease ran out) that they have
        neither reviewed nor skipped. None when there is none."""
        i, r = t.review_items, t.reviews
        now = time.time_ns() if now_ns is None else now_ns
        until = now + queue.lease_seconds * 10**9
        pending = (i.c.queue_id == queue.id) & (i.c.status == ItemStatus.PENDING.value)
        free = or_(i.c.lease_owner.is_(None), i.c.lease_until_ns < now, i.c.lease_owner == reviewer)
        seen = exists().where(r.c.item_id == i.c.id, r.c.reviewer == reviewer)
        with self.engine.connect() as conn:
            held = conn.execute(
                select(i).where(pending, i.c.lease_owner == reviewer, i.c.lease_until_ns >= now).limit(1)
            ).first()
            if held is not None:
                return _item(held)
            # in the queue's index order, so a long queue is not sorted for every claim
            candidates = list(
                conn.execute(
                    select(i.c.id)
                    .where(pending, free, ~seen)
                    .order_by(i.c.created_ns, i.c.id)
                    .limit(_CLAIM_CANDIDATES)
                ).scalars()
            )
        for item_id in candidates:
            with self.engine.begin() as conn:
                taken = conn.execute(
                    update(i)
                    .where(i.c.id == item_id, i.c.status == ItemStatus.PENDING.value, free)
                    .values(lease_owner=reviewer, lease_until_ns=until)
                )
                if taken.rowcount == 1:
                    row = conn.execute(select(i).where(i.c.id == item_id)).first()
                    return None if row is None else _item(row)
        return None

    def release(self, project_id: str, item_id: str, reviewer: str) -> bool:
        """Give up a held item; False when ``reviewer`` did not hold it."""
        i = t.review_items
        with self.engine.begin() as conn:
            done = conn.execute(
                update(i)
                .where(i.c.project_id == project_id, i.c.id == item_id, i.c.lease_owner == reviewer)
                .values(lease_owner=None, lease_until_ns=None)
            )
        return bool(done.rowcount)

    def record_review(
        self, queue: ReviewQueue, item: ReviewItem, review: Review, now_ns: int | None = None
    ) -> None:
        """Store a reviewer's review (or skip) of an item in one transaction: the review, its scores (also
        copied to the trace as human scores that name the reviewer), the item's count and status, and the
        lease let go. Refused (:class:`ReviewError`) when another reviewer holds the item, when it is
        complete and this reviewer had not reviewed it, and for a skip of an item this reviewer has
        reviewed (it would discard the review)."""
        i, r, s = t.review_items, t.reviews, t.review_scores
        now = time.time_ns() if now_ns is None else now_ns
        with self.engine.begin() as conn:
            row = conn.execute(select(i).where(i.c.id == item.id).with_for_update()).first()
            if row is None:
                raise ReviewError("that item is no longer in the queue")
            holder, until = row.lease_owner, row.lease_until_ns
            if holder is not None and holder != review.reviewer and until is not None and until >= now:
                raise ReviewError(f"another reviewer ({holder}) holds this item now; take the next one")
            before = conn.execute(
                select(r.c.skipped).where(r.c.item_id == item.id, r.c.reviewer == review.reviewer)
            ).first()
            if row.status == ItemStatus.COMPLETED.value and before is None:
                raise ReviewError("this item has all its reviews already")
            if review.skipped and before is not None and not before.skipped:
                raise ReviewError(
                    "you have reviewed this item: a skip would discard your review (its scores and "
                    "corrected output); save the review again to change it"
                )
            conn.execute(delete(r).where(r.c.item_id == item.id, r.c.reviewer == review.reviewer))
            conn.execute(delete(s).where(s.c.item_id == item.id, s.c.reviewer == review.reviewer))
            conn.execute(
                r.insert().values(
                    item_id=item.id,
                    reviewer=review.reviewer,
                    project_id=item.project_id,
                    trace_id=item.trace_id,
                    skipped=review.skipped,
                    corrected_output=review.corrected_output,
                    comment=review.comment,
                    created_ns=now,
                )
            )
            self._write_scores(conn, item, review, now)
            counted = conn.execute(
                select(func.count()).select_from(r).where(r.c.item_id == item.id, r.c.skipped.is_(False))
            ).scalar_one()
            status = ItemStatus.COMPLETED if counted >= queue.reviews_per_item else ItemStatus.PENDING
            conn.execute(
                update(i)
                .where(i.c.id == item.id)
                .values(reviews=counted, status=status.value, lease_owner=None, lease_until_ns=None)
            )

    def _write_scores(self, conn: Connection, item: ReviewItem, review: Review, now: int) -> None:
        sc = t.scores
        if review.skipped or not review.scores:
            names = [
                mirrored_score_id(item.id, review.reviewer, name) for name in self._config_names(conn, item)
            ]
            if names:
                conn.execute(delete(sc).where(sc.c.project_id == item.project_id, sc.c.id.in_(names)))
            return
        conn.execute(
            t.review_scores.insert(),
            [
                {
                    "item_id": item.id,
                    "reviewer": review.reviewer,
                    "config_name": score.config_name,
                    "project_id": item.project_id,
                    "trace_id": item.trace_id,
                    "value": score.value,
                    "string_value": score.string_value,
                    "created_ns": now,
                }
                for score in review.scores
            ],
        )
        mirrored = [
            Score(
                id=mirrored_score_id(item.id, review.reviewer, score.config_name),
                trace_id=item.trace_id,
                name=score.config_name,
                data_type=ScoreDataType.CATEGORICAL
                if score.value is None
                else (
                    ScoreDataType.BOOLEAN
                    if score.string_value in ("true", "false")
                    else ScoreDataType.NUMERIC
                ),
                value=score.value,
                string_value=score.string_value,
                source=ScoreSource.HUMAN,
                comment=f"review by {review.reviewer}",
                created_ns=now,
                author=review.reviewer,
            )
            for score in review.scores
        ]
        ids = [m.id for m in mirrored]
        conn.execute(delete(sc).where(sc.c.project_id == item.project_id, sc.c.id.in_(ids)))
        conn.execute(sc.insert(), [score_row(item.project_id, m) for m in mirrored])

    def _config_names(self, conn: Connection, item: ReviewItem) -> list[str]:
        q = t.review_queues
        text = conn.execute(select(q.c.configs).where(q.c.id == item.queue_id)).scalar()
        return list(orjson.loads(text)) if text else []
