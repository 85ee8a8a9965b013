"""The online evaluators service: save evaluators (each edit a new version), pick live traces into the
persisted work queue (the poll), backfill a time range, and report counts. The API, the CLI and the UI
call it; the background worker (:mod:`._worker`) scores what it queued."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pilothouse.evals.judges import JudgeReply
from pilothouse.evals.scoring import (
    ScorerConfigError,
    accepts_judge,
    available_scorers,
    build_scorer,
    is_model_graded,
)
from pilothouse.quality.online._rules import (
    JUDGE_TRACE_PREFIX,
    EvaluatorDefinition,
    RuleError,
    check_name,
    parse_definition,
    sampled,
)
from pilothouse.store.online import EvaluatorRow, LiveTrace, OnlineStore, WorkItem
from pilothouse.store.sql import SqlStore

__all__ = ["BackfillResult", "EvaluatorStatus", "OnlineEvaluators"]

POLL_PAGE = 2_000  # traces read per query of a poll or backfill
BACKFILL_MAX_TRACES = 1_000_000  # traces one backfill looks at, at most
BACKFILL_MAX_ITEMS = 100_000  # items one backfill may queue
MAX_EVALUATORS = 100  # per project: each one is matched against every new trace


@dataclass(frozen=True, slots=True)
class EvaluatorStatus:
    """An evaluator with its items by state (its current version, and all versions) and what its
    judge spent today (UTC)."""

    evaluator: EvaluatorRow
    counts: Mapping[str, int]
    all_versions: Mapping[str, int]
    cost_today_usd: float

    def document(self) -> dict[str, Any]:
        """The JSON form the API and the CLI show."""
        e = self.evaluator
        return {
            "id": e.id,
            "name": e.name,
            "version": e.version,
            "enabled": e.enabled,
            **e.definition,
            "counts": dict(self.counts),
            "counts_all_versions": dict(self.all_versions),
            "cost_today_usd": round(self.cost_today_usd, 6),
            "created_ns": e.created_ns,
            "updated_ns": e.updated_ns,
        }


@dataclass(frozen=True, slots=True)
class BackfillResult:
    """What a backfill did: traces looked at, items queued (new), and whether it stopped at a limit."""

    traces: int
    queued: int
    truncated: bool


@dataclass(slots=True)
class _Live:
    """An enabled evaluator as the poll uses it."""

    row: EvaluatorRow
    definition: EvaluatorDefinition


class _CheckOnlyJudge:
    """The judge a model-graded scorer is built with when its spec is only checked (on save): the worker
    builds it again with the real judge model."""

    async def complete(self, messages: list[dict[str, Any]], **_options: Any) -> JudgeReply:
        raise RuntimeError("a checking judge is never called")


def utc_day_start_ns(now_ns: int) -> int:
    """Midnight (UTC) of the day ``now_ns`` falls in: when a daily cost cap starts again."""
    day = 86_400 * 1_000_000_000
    return now_ns - now_ns % day


class OnlineEvaluators:
    """Online evaluators over the store. ``served_models``: the models judges may use (the server's
    gateway), checked on save when given."""

    def __init__(self, store: SqlStore, served_models: Sequence[str] | None = None) -> None:
        self.store = store
        self.online = OnlineStore(store)
        self.served_models = None if served_models is None else frozenset(served_models)

    # -- saving ------------------------------------------------------------------------------------

    def check(self, document: Any) -> tuple[EvaluatorDefinition, dict[str, Any]]:
        """Parse a definition and build its scorer once; :class:`RuleError` says what is wrong."""
        definition = parse_definition(document)
        kind = str(definition.scorer["type"])
        if "judge" in definition.scorer:
            raise RuleError(
                "'scorer.judge': the judge goes beside 'scorer' (\"judge\": MODEL), not inside it"
            )
        graded = is_model_graded(kind)
        if graded and definition.judge is None:
            raise RuleError(f"scorer '{kind}' grades with a model: set 'judge' to a model this server serves")
        judged = definition.judge is not None
        if judged and not accepts_judge(kind) and kind in available_scorers():
            raise RuleError(f"'judge' is only for scorers that call a model; '{kind}' does not")
        if judged and self.served_models is not None and definition.judge not in self.served_models:
            served = ", ".join(sorted(self.served_models)) or "none"
            raise RuleError(f"'judge': {definition.judge!r} is not served here (models: {served})")
        try:
            build_scorer(definition.scorer_spec(graded), _CheckOnlyJudge() if judged else None)
        except ScorerConfigError as exc:
            raise RuleError(f"'scorer': {exc}") from None
        return definition, definition.document()

    def create(self, project_id: str, name: Any, document: Any, *, enabled: bool = True) -> EvaluatorRow:
        """A new evaluator; it picks traces stored from now on (:meth:`backfill` for older ones).
        :class:`RuleError` for a bad definition, :class:`DuplicateEvaluator` for a taken name."""
        name = check_name(name)
        _definition, stored = self.check(document)
        if len(self.online.list_evaluators(project_id)) >= MAX_EVALUATORS:
            raise RuleError(f"a project may have at most {MAX_EVALUATORS} evaluators; delete one first")
        cursor = self.online.max_trace_pk()
        return self.online.create_evaluator(project_id, name, stored, enabled=enabled, cursor_pk=cursor)

    def update(
        self, project_id: str, name: str, document: Any | None, enabled: bool | None
    ) -> EvaluatorRow | None:
        """Edit an evaluator (a changed definition is a new version); None when there is none."""
        stored = None if document is None else self.check(document)[1]
        return self.online.update_evaluator(project_id, name, stored, enabled)

    def delete(self, project_id: str, name: str) -> bool:
        """Delete an evaluator and its unfinished work; its scores stay."""
        return self.online.delete_evaluator(project_id, name)

    # -- reading -----------------------------------------------------------------------------------

    def get(self, project_id: str, name: str) -> EvaluatorRow | None:
        """One evaluator by name."""
        return self.online.get_evaluator(project_id, name)

    def statuses(self, project_id: str, now_ns: int | None = None) -> list[EvaluatorStatus]:
        """Every evaluator of the project with its counts and today's judge cost."""
        counts = self.online.counts(project_id)
        since = utc_day_start_ns(now_ns or time.time_ns())
        found = []
        for row in self.online.list_evaluators(project_id):
            every: dict[str, int] = {}
            for (evaluator_id, _version), states in counts.items():
                if evaluator_id == row.id:
                    for state, n in states.items():
                        every[state] = every.get(state, 0) + n
            found.append(
                EvaluatorStatus(
                    row, counts.get((row.id, row.version), {}), every, self.online.cost_since(row.id, since)
                )
            )
        return found

    def status(self, project_id: str, name: str) -> EvaluatorStatus | None:
        """One evaluator's status, or None."""
        return next((s for s in self.statuses(project_id) if s.evaluator.name == name), None)

    def trace_results(self, project_id: str, trace_id: str) -> list[tuple[str, WorkItem]]:
        """Each online item of a trace with its evaluator's name (deleted evaluators: their id)."""
        names = {e.id: e.name for e in self.online.list_evaluators(project_id)}
        return [
            (names.get(i.evaluator_id, i.evaluator_id), i)
            for i in self.online.items_for_trace(project_id, trace_id)
        ]

    # -- picking traces ----------------------------------------------------------------------------

    def _select(
        self, evaluators: Sequence[_Live], traces: Sequence[LiveTrace], *, live: bool
    ) -> list[tuple[str, str, int, str]]:
        """The (project, evaluator id, version, trace id) items that rules pick from ``traces``; ``live``:
        only traces past each evaluator's cursor."""
        wanted: dict[tuple[str, int], list[LiveTrace]] = {}
        for ev in evaluators:
            f = ev.definition.filters
            picked = [
                tr
                for tr in traces
                if tr.project_id == ev.row.project_id
                and (not live or tr.pk > ev.row.cursor_pk)
                and not (tr.name or "").startswith(JUDGE_TRACE_PREFIX)
                and sampled(tr.id, ev.definition.sampling)
                and f.matches_trace(tr.name, tr.tags, tr.metadata)
            ]
            if picked:
                wanted[ev.row.id, ev.row.version] = picked
        by_id = {ev.row.id: ev for ev in evaluators}
        need_spans = {
            tr.pk
            for (eid, _), trs in wanted.items()
            if by_id[eid].definition.filters.needs_spans
            for tr in trs
        }
        spans = self.online.span_facts(sorted(need_spans))
        items: list[tuple[str, str, int, str]] = []
        for (eid, version), trs in wanted.items():
            ev = by_id[eid]
            f = ev.definition.filters
            if f.needs_spans:
                trs = [tr for tr in trs if f.matches_spans(tr.model, *spans[tr.pk])]
            if f.score is not None and trs:
                scores = self.online.score_facts(ev.row.project_id, [tr.id for tr in trs])
                trs = [tr for tr in trs if f.score.matches(scores[tr.id])]
            items.extend((ev.row.project_id, eid, version, tr.id) for tr in trs)
        return items

    def _live_evaluators(self) -> list[_Live]:
        found = []
        for row in self.online.list_evaluators(enabled_only=True):
            try:
                found.append(_Live(row, parse_definition(row.definition)))
            except RuleError:
                continue  # saved by an older version with other rules: skipped, not fatal
        return found

    def poll(self, up_to_pk: int, due_ns: int, *, max_pages: int = 20) -> int:
        """Queue the items that enabled evaluators pick among traces stored after their cursors, up to
        key ``up_to_pk`` (traces settled by now), and move the cursors on; how many items were new."""
        evaluators = self._live_evaluators()
        queued = 0
        for _ in range(max_pages):
            behind = [ev for ev in evaluators if ev.row.cursor_pk < up_to_pk]
            if not behind:
                break
            low = min(ev.row.cursor_pk for ev in behind)
            page = self.online.live_trace_keys(low, up_to_pk, POLL_PAGE)
            high = page[-1][0] if len(page) == POLL_PAGE else up_to_pk
            # the sample first, from the ids alone: only sampled traces' details are read
            rate = max(ev.definition.sampling for ev in behind)
            traces = self.online.traces_by_key([pk for pk, _project, tid in page if sampled(tid, rate)])
            queued += self.online.enqueue(self._select(behind, traces, live=True), due_ns)
            self.online.advance_cursor([ev.row.id for ev in behind], high)
            for ev in behind:
                ev.row = _advanced(ev.row, high)
        return queued

    def backfill(self, project_id: str, name: str, start_ns: int, end_ns: int) -> BackfillResult | None:
        """Queue what the evaluator's current version picks among the project's traces that started in
        [start_ns, end_ns) (traces already scored by this version are not queued again). None when
        there is no such evaluator."""
        row = self.online.get_evaluator(project_id, name)
        if row is None:
            return None
        live = [_Live(row, parse_definition(row.definition))]
        after, seen, queued = 0, 0, 0
        while True:
            page = self.online.traces_started(project_id, start_ns, end_ns, after, POLL_PAGE)
            if not page:
                return BackfillResult(seen, queued, False)
            seen += len(page)
            after = page[-1].pk
            queued += self.online.enqueue(self._select(live, page, live=False), time.time_ns())
            if seen >= BACKFILL_MAX_TRACES or queued >= BACKFILL_MAX_ITEMS:
                return BackfillResult(seen, queued, True)


def _advanced(row: EvaluatorRow, cursor: int) -> EvaluatorRow:
    return replace(row, cursor_pk=max(row.cursor_pk, cursor))
