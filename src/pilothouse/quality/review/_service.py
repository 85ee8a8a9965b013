"""The review service: score configs, annotation queues and how they fill, the next item for a
reviewer (with a lease), reviews with corrected outputs, corrected outputs sent to a dataset, agreement
(Cohen's kappa) and the human labels that calibrate judges. The API, the CLI and the UI call it and
only render what it returns."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from pilothouse.domain.calibrations import Calibration
from pilothouse.domain.datasets import DatasetError, DatasetVersion
from pilothouse.domain.queries import TraceQuery, next_page
from pilothouse.domain.review import (
    MAX_CORRECTION_CHARS,
    MAX_REASON_CHARS,
    MAX_REVIEWER_CHARS,
    Review,
    Reviewer,
    ReviewError,
    ReviewItem,
    ReviewQueue,
    ReviewScore,
    ScoreConfig,
    ScoreKind,
    check_name,
    check_spans,
    check_username,
)
from pilothouse.domain.traces import ObservationKind
from pilothouse.evals import Evaluations
from pilothouse.quality.review._agreement import ConfigAgreement, config_agreement
from pilothouse.quality.review._labels import calibration_rows
from pilothouse.quality.review._passwords import hash_password, verify_password
from pilothouse.quality.review._view import ItemView, ReviewNotFound
from pilothouse.store.review import ReviewStore
from pilothouse.store.review_results import ReviewResults
from pilothouse.store.reviewers import ReviewerStore
from pilothouse.store.sql import SqlStore

__all__ = ["ItemView", "ReviewNotFound", "ReviewService"]

DEFAULT_PROJECT = "default"
MAX_TRACES_PER_FILL = 10_000
MAX_TRACES_PER_CALL = 1_000
SOURCES = frozenset({"filter", "manual", "online", "detector", "api"})


class ReviewService:
    """Human review over one database (and the evaluations service, for datasets)."""

    def __init__(self, store: SqlStore, evaluations: Evaluations | None = None) -> None:
        self.sql = store
        self.store = ReviewStore(store)
        self.reviewers = ReviewerStore(store)
        self.results = ReviewResults(store)
        self.evaluations = evaluations if evaluations is not None else Evaluations.over(store)

    # -- reviewers ----------------------------------------------------------------------------------

    def add_user(
        self, project_id: str, username: str, password: str, display_name: str | None = None
    ) -> Reviewer:
        """A reviewer who logs in with ``username`` and ``password`` (kept as a scrypt hash)."""
        check_username(username)
        try:
            hashed = hash_password(password)
        except ValueError as exc:
            raise ReviewError(str(exc)) from None
        name = (display_name or username).strip()[:200] or username
        return self.reviewers.add_user(project_id, username, name, hashed)

    def authenticate(self, project_id: str, username: str, password: str) -> Reviewer | None:
        """The reviewer if the password is theirs and they are not disabled; None otherwise."""
        found = self.reviewers.user_with_hash(project_id, username)
        if found is None:
            verify_password(password, _decoy())  # the same work for an unknown name: no timing oracle
            return None
        user, stored = found
        return user if verify_password(password, stored) and not user.disabled else None

    # -- configs and queues -------------------------------------------------------------------------

    def create_config(
        self,
        project_id: str,
        name: str,
        kind: str,
        *,
        description: str = "",
        min_value: float | None = None,
        max_value: float | None = None,
        categories: Sequence[str] = (),
    ) -> ScoreConfig:
        """A new score config (numeric needs min_value < max_value; categorical 2-20 labels)."""
        try:
            score_kind = ScoreKind(kind)
        except ValueError:
            raise ReviewError(f"kind must be one of {', '.join(k.value for k in ScoreKind)}") from None
        config = ScoreConfig(
            id=uuid.uuid4().hex,
            project_id=project_id,
            name=name,
            kind=score_kind,
            description=description or "",
            min_value=min_value if score_kind is ScoreKind.NUMERIC else None,
            max_value=max_value if score_kind is ScoreKind.NUMERIC else None,
            categories=tuple(c.strip() for c in categories) if score_kind is ScoreKind.CATEGORICAL else (),
            created_ns=time.time_ns(),
        )
        config.check()
        self.store.add_config(config)
        return config

    def configs(self, project_id: str) -> list[ScoreConfig]:
        """The project's score configs."""
        return self.store.list_configs(project_id)

    def config(self, project_id: str, name: str) -> ScoreConfig:
        """One score config; :class:`ReviewNotFound` when the project has none of that name."""
        found = self.store.list_configs(project_id, [name])
        if not found:
            raise ReviewNotFound(f"there is no score config {name!r} in this project")
        return found[0]

    def create_queue(
        self,
        project_id: str,
        name: str,
        configs: Sequence[str],
        *,
        description: str = "",
        reviews_per_item: int = 1,
        lease_seconds: int = 600,
    ) -> ReviewQueue:
        """A new annotation queue reviewed with the named score configs (which must exist)."""
        queue = ReviewQueue(
            id=uuid.uuid4().hex,
            project_id=project_id,
            name=name,
            description=description or "",
            config_names=tuple(dict.fromkeys(configs)),
            reviews_per_item=reviews_per_item,
            lease_seconds=lease_seconds,
            created_ns=time.time_ns(),
        )
        queue.check()
        known = {c.name for c in self.store.list_configs(project_id, list(queue.config_names))}
        missing = [n for n in queue.config_names if n not in known]
        if missing:
            raise ReviewNotFound(f"there is no score config {missing[0]!r} in this project")
        self.store.add_queue(queue)
        return queue

    def ensure_queue(
        self, project_id: str, name: str, configs: Sequence[str] = (), description: str = ""
    ) -> ReviewQueue:
        """The queue ``name``, created (with those score configs) when the project has none: for parts
        that send traces to people without an admin having made their queue first."""
        found = self.store.get_queue(project_id, name)
        if found is not None:
            return found
        try:
            return self.create_queue(project_id, name, configs, description=description)
        except ReviewNotFound:
            raise
        except ReviewError:  # made by another process meanwhile
            found = self.store.get_queue(project_id, name)
            if found is None:
                raise
            return found

    def queues(self, project_id: str) -> list[tuple[ReviewQueue, dict[str, int]]]:
        """The project's queues with their item counts (pending, completed)."""
        return self.store.list_queues(project_id)

    def queue(self, project_id: str, name: str) -> ReviewQueue:
        """One queue; :class:`ReviewNotFound` when the project has none of that name."""
        found = self.store.get_queue(project_id, name) if isinstance(name, str) else None
        if found is None:
            raise ReviewNotFound(f"there is no queue {str(name)[:100]!r} in this project")
        return found

    # -- filling queues -------------------------------------------------------------------------------

    def enqueue(
        self,
        trace_id: str,
        queue: str,
        reason: str,
        *,
        project_id: str = DEFAULT_PROJECT,
        spans: Sequence[tuple[int, int]] | None = None,
        source: str = "api",
    ) -> bool:
        """Put one trace in a queue for people to review, saying why (online-evaluator disagreements and
        low detector confidence come this way, with ``source`` "online" or "detector"); ``spans`` are
        the response's unsupported character ranges, highlighted on the review screen. True if it was
        added; False if the trace was in the queue already. Unknown trace or queue: ReviewError."""
        added, unknown = self.add_traces(project_id, queue, [trace_id], reason, source=source, spans=spans)
        if unknown:
            raise ReviewNotFound(f"there is no trace {trace_id[:40]!r} in this project")
        return added == 1

    def add_traces(
        self,
        project_id: str,
        queue: str,
        trace_ids: Sequence[str],
        reason: str = "",
        *,
        source: str = "manual",
        spans: Sequence[tuple[int, int]] | None = None,
    ) -> tuple[int, list[str]]:
        """Put stored traces in a queue; returns (how many were new, the ids that are no trace here)."""
        target = self.queue(project_id, queue)
        ids = list(dict.fromkeys(str(i) for i in trace_ids))
        if len(ids) > MAX_TRACES_PER_CALL:
            raise ReviewError(f"at most {MAX_TRACES_PER_CALL} traces at once")
        if source not in SOURCES:
            raise ReviewError(f"source must be one of {', '.join(sorted(SOURCES))}")
        if len(reason) > MAX_REASON_CHARS:
            raise ReviewError(f"a reason is at most {MAX_REASON_CHARS} characters")
        checked = check_spans(spans)
        stored = self.store.existing_traces(project_id, ids)
        added = self.store.add_items(target, [(tid, reason, source, checked) for tid in ids if tid in stored])
        return added, [tid for tid in ids if tid not in stored]

    def fill_from_filter(
        self, project_id: str, queue: str, query: TraceQuery, *, limit: int = 100, reason: str = ""
    ) -> int:
        """Put the traces matching ``query`` (newest first, at most ``limit``) in a queue; returns how
        many were new there."""
        if not 1 <= limit <= MAX_TRACES_PER_FILL:
            raise ReviewError(f"limit is from 1 to {MAX_TRACES_PER_FILL}")
        target = self.queue(project_id, queue)
        page = TraceQuery(
            **{**{f: getattr(query, f) for f in TraceQuery.__dataclass_fields__}, "limit": min(limit, 500)}
        )
        ids: list[str] = []
        while len(ids) < limit:
            found = self.sql.list_traces(project_id, page)
            ids.extend(summary.trace.id for summary in found.data)
            if found.next_cursor is None:
                break
            page = next_page(page, found.next_cursor)
        return self.store.add_items(
            target, [(tid, reason or "trace filter", "filter", ()) for tid in ids[:limit]]
        )

    # -- reviewing -------------------------------------------------------------------------------------

    def next_item(self, project_id: str, queue: str, reviewer: str) -> ItemView | None:
        """The next item for ``reviewer``, leased to them (see :meth:`ReviewStore.claim`), or None."""
        target = self.queue(project_id, queue)
        item = self.store.claim(target, _who(reviewer))
        return None if item is None else self._view(target, item)

    def item(self, project_id: str, item_id: str) -> ItemView:
        """One item as the review screen shows it (nothing is leased)."""
        item, queue = self.item_and_queue(project_id, item_id)
        return self._view(queue, item)

    def item_and_queue(self, project_id: str, item_id: str) -> tuple[ReviewItem, ReviewQueue]:
        """An item of the project and its queue (no trace read); :class:`ReviewNotFound` otherwise."""
        item = self.store.get_item(project_id, item_id) if isinstance(item_id, str) else None
        queue = None if item is None else self.store.get_queue_by_id(project_id, item.queue_id)
        if item is None or queue is None:
            raise ReviewNotFound("there is no such review item in this project")
        return item, queue

    def queue_configs(self, queue: ReviewQueue) -> list[ScoreConfig]:
        """The score configs of a queue, in its order."""
        found = self.store.list_configs(queue.project_id, list(queue.config_names))
        return sorted(found, key=lambda c: queue.config_names.index(c.name))

    def _view(self, queue: ReviewQueue, item: ReviewItem) -> ItemView:
        detail = self.sql.get_trace(queue.project_id, item.trace_id)
        text_in = text_out = None
        context: list[str] = []
        if detail is not None:
            text_in, text_out = detail.trace.input, detail.trace.output
            roots = [o for o in detail.observations if o.parent_id is None]
            if roots and text_in is None:
                text_in = roots[0].input
            if roots and text_out is None:
                text_out = roots[0].output
            context = [
                o.output
                for o in detail.observations
                if o.kind in (ObservationKind.RETRIEVAL, ObservationKind.TOOL) and o.output
            ][:20] or _metadata_context(detail.trace.metadata)
        ordered = self.queue_configs(queue)
        reviews = self.results.reviews_of(queue.project_id, item.id)
        return ItemView(item, queue, tuple(ordered), text_in, tuple(context), text_out, tuple(reviews))

    def submit(
        self,
        project_id: str,
        item_id: str,
        reviewer: str,
        answers: Mapping[str, Any],
        *,
        corrected_output: str | None = None,
        comment: str | None = None,
    ) -> ItemView:
        """Record ``reviewer``'s answers (config name -> value; every config of the queue needs one),
        an optional corrected output and comment. Their scores are also put on the trace as human
        scores naming them. Refused while another reviewer holds the item."""
        item, queue = self.item_and_queue(project_id, item_id)
        configs = self.queue_configs(queue)
        unknown = sorted(set(answers) - {c.name for c in configs})
        if unknown:
            raise ReviewError(f"{unknown[0]!r} is not a score config of queue {queue.name!r}")
        scores = []
        for config in configs:
            if config.name not in answers or answers[config.name] in (None, ""):
                raise ReviewError(f"{config.name}: give an answer")
            value, text = config.parse(answers[config.name])
            scores.append(ReviewScore(item.id, item.trace_id, config.name, _who(reviewer), value, text))
        corrected = corrected_output if corrected_output and corrected_output.strip() else None
        if corrected is not None and len(corrected) > MAX_CORRECTION_CHARS:
            raise ReviewError(f"a corrected output is at most {MAX_CORRECTION_CHARS:,} characters")
        if comment is not None and len(comment) > 5000:
            raise ReviewError("a comment is at most 5,000 characters")
        review = Review(
            item.id,
            item.trace_id,
            _who(reviewer),
            False,
            corrected,
            comment or None,
            0,
            tuple(scores),
        )
        self.store.record_review(queue, item, review)
        return self.item(project_id, item_id)

    def skip(self, project_id: str, item_id: str, reviewer: str) -> None:
        """``reviewer`` passes on the item: it is not offered to them again, and others still get it."""
        item, queue = self.item_and_queue(project_id, item_id)
        self.store.record_review(queue, item, Review(item.id, item.trace_id, _who(reviewer), True))

    def release(self, project_id: str, item_id: str, reviewer: str) -> bool:
        """Give a held item back to the queue (False: ``reviewer`` did not hold it);
        :class:`ReviewNotFound` for an item that is not the project's."""
        self.item_and_queue(project_id, item_id)
        return self.store.release(project_id, item_id, _who(reviewer))

    # -- datasets and calibration -----------------------------------------------------------------------

    def send_to_dataset(self, project_id: str, queue: str, dataset: str) -> tuple[DatasetVersion, bool, int]:
        """Make (or extend) the dataset ``dataset`` with the queue's corrected outputs as expected
        answers: a new version holding the newest version's items and each corrected trace. Returns
        (version, created, corrected items)."""
        check_name(dataset, "a dataset name")
        target = self.queue(project_id, queue)
        corrected = self.results.corrections(project_id, target)
        if not corrected:
            raise ReviewError(f"no reviewer of queue {queue!r} has written a corrected output yet")
        try:
            version, created = self.evaluations.curate_corrections(project_id, dataset, corrected)
        except DatasetError as exc:
            raise ReviewError(str(exc)) from None
        return version, created, len(corrected)

    def calibration_labels(self, project_id: str, config_name: str) -> tuple[list[dict[str, Any]], int]:
        """Reviewers' answers to a boolean or numeric config as a labels file for ``pilothouse judge
        calibrate`` (one dataset item per trace: ``input`` holds its variables, ``output`` and ``label``,
        the majority answer, a numeric label the mean; ``expected`` is a corrected output, when one was
        written; a chat trace keeps its ``messages``). Returns (labels, traces left out
        because reviewers tied)."""
        config = self.config(project_id, config_name)
        if config.kind is ScoreKind.CATEGORICAL:
            raise ReviewError("calibration needs pass/fail labels: use a boolean or numeric score config")
        by_trace: dict[str, list[ReviewScore]] = {}
        for score in self.results.human_scores(project_id, config.name):
            by_trace.setdefault(score.trace_id, []).append(score)
        items = self.evaluations.evals.trace_items(project_id, list(by_trace))
        corrected = self.results.corrections(project_id)
        return calibration_rows(config.kind, by_trace, items, corrected)

    def judge_calibrations(self, project_id: str, config_name: str) -> list[Calibration]:
        """The stored calibrations (newest first) of judge scorers named like the config: what the gate
        reads for those judges, made from labels such as :meth:`calibration_labels` gives."""
        found = self.evaluations.calibrations.list_calibrations(project_id, 200)
        return [c for c in found if c.scorer_name == config_name]

    # -- agreement -------------------------------------------------------------------------------------

    def agreement(self, project_id: str, config_name: str) -> ConfigAgreement:
        """Cohen's kappa on one score config between reviewers and between each automated source of a
        score of the same name (judge, code, online) and the reviewers; quadratic-weighted for numeric
        configs."""
        config = self.config(project_id, config_name)
        human = [
            (s.trace_id, s.reviewer, config.rating(s.value, s.string_value))
            for s in self.results.human_scores(project_id, config.name)
        ]
        traces = sorted({trace for trace, _, _ in human})
        automated = [
            (trace, source, config.rating(value, text))
            for trace, source, value, text in self.results.automated_scores(project_id, config.name, traces)
        ]
        span = None
        if config.kind is ScoreKind.NUMERIC and config.min_value is not None and config.max_value is not None:
            span = config.max_value - config.min_value
        return config_agreement(
            config.name,
            [r for r in human if r[2] is not None],
            [r for r in automated if r[2] is not None],
            span,
        )


def _who(reviewer: str) -> str:
    """A reviewer's name as it is stored (cut to the column's size)."""
    if not reviewer:
        raise ReviewError("a review needs a reviewer")
    return reviewer[:MAX_REVIEWER_CHARS]


@functools.cache
def _decoy() -> str:
    return hash_password("not-a-real-password-0000")


def _metadata_context(metadata: Mapping[str, Any]) -> list[str]:
    """The context a trace carries in its metadata (``context``: a text or a list of texts), where an
    online evaluator's faithfulness check reads it by default: what a reviewer checks the response
    against when the trace has no retrieval or tool spans."""
    value = metadata.get("context") if isinstance(metadata, Mapping) else None
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str) and v][:20]
    return []
