"""The online evaluators' background worker: one asyncio task per server process.

Each cycle it (1) polls: the traces settled since the last poll go through every enabled evaluator's
rules into the persisted work queue; (2) claims due items under a lease; (3) scores them, a few at a
time, and (4) writes each result as a score on the trace (source ``online``, the evaluator's name, its
version in the comment) and marks the item scored, or unmeasured with a reason once the scorer has
failed ``max_attempts`` times. Every step that touches the database runs in a thread; local scorers
run in a thread of their own (a CPU-bound detector never holds the event loop that serves requests);
judge scorers call their model on the event loop through the gateway, traced, priced and budgeted like
any call, in a trace of their own (``online-eval <name>``, which no rule picks).

A score's id is a digest of (evaluator, version, trace): a second worker that took over an item whose
lease expired cannot store a second score for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from pilothouse.domain.chat import CallContext, ChatModel, current_call
from pilothouse.domain.ids import new_trace_id
from pilothouse.domain.traces import Score, ScoreDataType, ScoreSource, Trace, TraceAttributes
from pilothouse.evals.judges import Judge
from pilothouse.evals.scoring import Sample, Scorer, ScoreResult, build_scorer, is_model_graded
from pilothouse.quality.online._rules import (
    JUDGE_TRACE_PREFIX,
    EvaluatorDefinition,
    ReviewRule,
    RuleError,
    parse_definition,
)
from pilothouse.quality.online._service import OnlineEvaluators, utc_day_start_ns
from pilothouse.quality.review import ReviewError, ReviewService
from pilothouse.store.online import PENDING, SCORED, UNMEASURED, Outcome, WorkItem

__all__ = ["OnlineWorker", "WorkerOptions", "online_score_id"]

log = logging.getLogger("pilothouse.online")
NS = 1_000_000_000
JudgeModels = Callable[[str], ChatModel | None]


def online_score_id(evaluator_id: str, version: int, trace_id: str) -> str:
    """The id of the one score an evaluator version gives a trace (32 characters)."""
    digest = hashlib.blake2b(f"{evaluator_id}:{version}:{trace_id}".encode(), digest_size=15).hexdigest()
    return "on" + digest


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    """How a worker runs (the ``online_evals_*`` settings)."""

    poll_s: float = 1.0
    settle_s: float = 2.0
    lease_s: float = 300.0
    max_attempts: int = 3
    concurrency: int = 4
    batch: int = 250  # items claimed (and results written) at once; fewer for slow scorers and judges
    stall_s: float = 300.0
    retry_base_s: float = 2.0  # an attempt that failed is due again after 2 s, 4 s, 8 s, ...


@dataclass(slots=True)
class WorkerStats:
    """Counters since start, and when the worker last made progress."""

    scored: int = 0
    unmeasured: int = 0
    retried: int = 0
    lost_leases: int = 0
    cycles: int = 0
    last_progress_ns: int = 0
    backlog: int = 0
    oldest_due_ns: int | None = None
    last_error: str | None = None
    sent_to_review: int = 0


@dataclass(frozen=True, slots=True)
class _ReviewCandidate:
    """A scored trace its evaluator's ``review`` rule may send to people (decided after the write)."""

    project_id: str
    trace_id: str
    rule: ReviewRule
    value: float
    passed: bool | None
    threshold: float
    spans: tuple[tuple[int, int], ...]
    source: str


@dataclass(slots=True)
class _Prepared:
    scorer: Scorer
    definition: EvaluatorDefinition
    name: str
    graded: bool  # it has a judge: scored on the server's loop, under the daily cap
    model_graded: bool = True  # it calls its judge every time (else only some: hallucination's cascade)


@dataclass(slots=True)
class _Settled:
    """The largest trace key at each recent poll: a trace is looked at once it is ``settle_s`` old."""

    seen: deque[tuple[int, int]] = field(default_factory=deque)
    settled: int = 0

    def up_to(self, now_ns: int, max_pk: int, settle_ns: int) -> int:
        """Note the largest key now; the largest key seen at least ``settle_ns`` ago."""
        self.seen.append((now_ns, max_pk))
        while self.seen and self.seen[0][0] <= now_ns - settle_ns:
            self.settled = max(self.settled, self.seen.popleft()[1])
        return self.settled


class OnlineWorker:
    """The background worker of one process (see the module's docstring). ``judge_models`` gives the
    chat model a judge scorer's ``judge`` names (None: not served)."""

    def __init__(
        self,
        service: OnlineEvaluators,
        judge_models: JudgeModels,
        options: WorkerOptions | None = None,
        *,
        owner: str | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.service = service
        self.judge_models = judge_models
        self.options = options or WorkerOptions()
        self.owner = owner or f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.clock = clock
        self.stats = WorkerStats()
        self._settled = _Settled()
        self._prepared: dict[tuple[str, int], _Prepared | str] = {}
        self._polled_ns = 0
        # Items claimed at once: a batch of local scorers is done in milliseconds; one with judges in a
        # judge call's time only if it holds no more than are judged at once (its lease must outlast it).
        self._claim = self.options.batch
        self._item_s = 0.0  # seconds a local scorer takes per item (a running average)
        self._spent: dict[str, float] = {}  # judge cost of the batch in hand, per evaluator
        self._to_review: list[_ReviewCandidate] = []  # of the batch in hand
        self._review: ReviewService | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker's task on the running event loop."""
        self.stats.last_progress_ns = self.clock()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pilothouse-online-evals")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Let the items in hand finish (up to ``timeout_s``), then stop; what is left keeps its lease
        and another worker (or this one after a restart) takes it once the lease expires."""
        self._stopping.set()
        if self._task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def alive(self) -> bool:
        """True while the task runs."""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                busy = await self.run_once()
            except Exception as exc:  # a database hiccup: logged, retried next cycle
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("online evaluators: a cycle failed")
                busy = False
            if not busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.options.poll_s)

    # -- one cycle ---------------------------------------------------------------------------------

    async def run_once(self) -> bool:
        """Poll (once per ``poll_s``), claim and score once; True when it claimed a full batch (another
        cycle should follow at once)."""
        o = self.options
        now = self.clock()
        online = self.service.online
        if now - self._polled_ns >= o.poll_s * NS:  # a full batch's next cycle comes sooner: no poll then
            self._polled_ns = now
            max_pk = await asyncio.to_thread(online.max_trace_pk)
            up_to = self._settled.up_to(now, max_pk, int(o.settle_s * NS))
            if up_to:
                await asyncio.to_thread(self.service.poll, up_to, now)
        # a read first: a claim takes SQLite's write lock, which an idle worker should not do every second
        self.stats.backlog, self.stats.oldest_due_ns = await asyncio.to_thread(online.backlog, now)
        items = []
        if self.stats.backlog:
            items = await asyncio.to_thread(online.claim, self.owner, self._claim, now, int(o.lease_s * NS))
        if items:
            self._spent.clear()
            self._to_review.clear()
            outcomes = await self._score_batch(items)
            # one transaction for the whole batch: few writes, so that ingest's writer rarely waits
            updated = await asyncio.to_thread(online.complete, self.owner, outcomes)
            self.stats.lost_leases += len(outcomes) - updated
            if self._to_review:  # after the scores are written: a 'disagrees' rule reads them
                self.stats.sent_to_review += await asyncio.to_thread(self._send_to_review, self._to_review)
            # what is still due, as far as this worker knows, until the next cycle reads it again
            finished = sum(1 for outcome in outcomes if outcome.retry_due_ns is None)
            self.stats.backlog = max(0, self.stats.backlog - finished)
            if not self.stats.backlog:
                self.stats.oldest_due_ns = None
            for outcome in outcomes:
                if outcome.retry_due_ns is not None:
                    self.stats.retried += 1
                elif outcome.state == SCORED:
                    self.stats.scored += 1
                else:
                    self.stats.unmeasured += 1
        self.stats.cycles += 1
        self.stats.last_progress_ns = self.clock()
        self.stats.last_error = None
        # Again at once only after a full batch: a trickle of items waits for the next poll and goes in
        # one batch, instead of a cycle (and a write transaction beside ingest's) per item or two.
        return len(items) >= self._claim

    def health(self) -> dict[str, Any]:
        """The watchdog's view for ``/health``: progress, backlog, and whether the worker is stalled
        (dead, silent for ``stall_s``, or due work older than that)."""
        now = self.clock()
        silent_s = (now - self.stats.last_progress_ns) / NS
        oldest_s = (
            0.0 if self.stats.oldest_due_ns is None else max(0.0, (now - self.stats.oldest_due_ns) / NS)
        )
        reasons = []
        if self._task is not None and not self.alive and not self._stopping.is_set():
            reasons.append("the online evaluators' worker has stopped")
        if silent_s > self.options.stall_s:
            reasons.append(f"the online evaluators' worker made no progress for {silent_s:.0f}s")
        if oldest_s > self.options.stall_s:
            reasons.append(f"online evaluator work has waited {oldest_s:.0f}s")
        return {
            "last_progress_s": round(silent_s, 3),
            "backlog": self.stats.backlog,
            "oldest_due_s": round(oldest_s, 3),
            "scored": self.stats.scored,
            "unmeasured": self.stats.unmeasured,
            "retried": self.stats.retried,
            "stalled": bool(reasons),
            "reasons": reasons,
        }

    # -- one item ----------------------------------------------------------------------------------

    def _prepare(self, item: WorkItem) -> _Prepared | str:
        key = (item.evaluator_id, item.version)
        if key in self._prepared:
            return self._prepared[key]
        document = self.service.online.definition_at(item.evaluator_id, item.version)
        row = next(
            (e for e in self.service.online.list_evaluators(item.project_id) if e.id == item.evaluator_id),
            None,
        )
        prepared: _Prepared | str
        if document is None or row is None:
            prepared = "the evaluator was deleted"
        else:
            try:
                definition = parse_definition(document)
                model_graded = is_model_graded(str(definition.scorer["type"]))
                # a judge for a model-graded scorer, or one that may escalate to it (hallucination)
                graded = model_graded or definition.judge is not None
                judge = None
                if graded:
                    model = self.judge_models(definition.judge or "")
                    if model is None:
                        raise RuleError(f"the judge model {definition.judge!r} is not served")
                    judge = Judge(model)
                scorer = build_scorer(definition.scorer_spec(model_graded), judge)
                prepared = _Prepared(scorer, definition, row.name, graded, model_graded)
            except (RuleError, ValueError) as exc:
                prepared = f"the evaluator cannot score: {exc}"
        self._prepared[key] = prepared
        return prepared

    def _load(self, items: list[WorkItem]) -> tuple[list[_Prepared | str], dict[tuple[str, str], Trace]]:
        """Each item's scorer, and the batch's traces (in one thread: a few queries for the batch)."""
        prepared = [self._prepare(item) for item in items]
        wanted = [
            (i.project_id, i.trace_id) for i, p in zip(items, prepared, strict=True) if not isinstance(p, str)
        ]
        return prepared, self.service.online.traces_for(wanted)

    async def _score_batch(self, items: list[WorkItem]) -> list[Outcome]:
        """Score a claimed batch: local scorers together in one thread (a loop of their own, so a
        CPU-bound detector never holds the server's), judges on the server's loop, ``concurrency`` at
        a time. A failure of the batch's reads makes every item try again later."""
        try:
            prepared, traces = await asyncio.to_thread(self._load, items)
        except Exception as exc:
            return [self._failed(item, f"{type(exc).__name__}: {exc}", None) for item in items]
        outcomes: dict[int, Outcome] = {}
        local: list[tuple[WorkItem, _Prepared, Sample]] = []
        graded: list[tuple[WorkItem, _Prepared, Sample]] = []
        for item, ready in zip(items, prepared, strict=True):
            trace = traces.get((item.project_id, item.trace_id))
            if isinstance(ready, str):
                outcomes[item.pk] = Outcome(item, UNMEASURED, reason=ready)
            elif trace is None:
                outcomes[item.pk] = Outcome(item, UNMEASURED, reason="the trace is not stored")
            else:
                (graded if ready.graded else local).append((item, ready, _sample(trace, ready.definition)))
        if local:
            started = time.perf_counter()
            results = await asyncio.to_thread(asyncio.run, _score_all([(p.scorer, s) for _, p, s in local]))
            self._item_s = (self._item_s + (time.perf_counter() - started) / len(local)) / 2
            for (item, ready, _), result in zip(local, results, strict=True):
                outcomes[item.pk] = self._outcome(item, ready, result)
        self._claim = self.options.concurrency if graded else self._local_claim()
        if graded:
            slots = asyncio.Semaphore(self.options.concurrency)
            judged = await asyncio.gather(
                *(self._judge(item, ready, sample, slots) for item, ready, sample in graded)
            )
            for (item, _, _), outcome in zip(graded, judged, strict=True):
                outcomes[item.pk] = outcome
        return [outcomes[item.pk] for item in items]

    def _local_claim(self) -> int:
        """Items to claim for local scorers: ``batch``, or fewer when scoring is slow (a detector at a
        second per item), so that a batch takes at most a quarter of its lease."""
        o = self.options
        return max(1, min(o.batch, int(o.lease_s / 4 / max(self._item_s, 1e-6))))

    def _failed(self, item: WorkItem, error: str, cost: float | None) -> Outcome:
        """Another attempt later (backing off), or unmeasured with the error once attempts run out."""
        if item.attempts < self.options.max_attempts:
            due = self.clock() + int(self.options.retry_base_s * 2 ** (item.attempts - 1) * NS)
            return Outcome(item, PENDING, reason=error, cost_usd=cost, retry_due_ns=due)
        return Outcome(item, UNMEASURED, reason=error, cost_usd=cost)

    async def _judge(
        self, item: WorkItem, prepared: _Prepared, sample: Sample, slots: asyncio.Semaphore
    ) -> Outcome:
        async with slots:
            cap = prepared.definition.daily_cost_cap_usd
            if cap is not None:
                since = utc_day_start_ns(self.clock())
                spent = await asyncio.to_thread(self.service.online.cost_since, item.evaluator_id, since)
                if spent + self._spent.get(item.evaluator_id, 0.0) >= cap:
                    local_only = getattr(prepared.scorer, "without_judge", None)
                    if local_only is None:
                        return Outcome(item, UNMEASURED, reason="daily cost cap")
                    # a scorer that only escalates to its judge goes on without it, and says so
                    (result,) = await _score_all([(local_only(), sample)])
                    note = "daily cost cap reached: the local detector alone"
                    result = replace(result, reason=f"{result.reason}; {note}" if result.reason else note)
                    return self._outcome(item, prepared, result)
            judge_trace = new_trace_id()
            result = await self._score(prepared, item, sample, judge_trace)
            called = prepared.model_graded or bool(result.details.get("judge_called"))
            outcome = self._outcome(item, prepared, result, judge_trace if called else None)
            if outcome.cost_usd:  # spent in this batch, not yet written: counts toward the cap now
                self._spent[item.evaluator_id] = self._spent.get(item.evaluator_id, 0.0) + outcome.cost_usd
            return outcome

    def _outcome(
        self, item: WorkItem, prepared: _Prepared, result: ScoreResult, judge_trace: str | None = None
    ) -> Outcome:
        """The item's outcome from its scorer's result; a judge's trace is named in the comment."""
        cost = None if result.judge_cost_usd is None else result.judge_cost_usd.usd
        if result.value is not None:
            comment = f"{prepared.name} v{item.version}" + (
                f" (judge trace {judge_trace})" if judge_trace else ""
            )
            comment += f": {result.reason}" if result.reason else ""
            score = Score(
                id=online_score_id(item.evaluator_id, item.version, item.trace_id),
                trace_id=item.trace_id,
                name=prepared.name,
                data_type=ScoreDataType.NUMERIC,
                value=result.value,
                source=ScoreSource.ONLINE,
                comment=comment[:2000],
                created_ns=self.clock(),
            )
            rule = prepared.definition.review
            if rule is not None:
                spans = tuple(
                    (d["start"], d["end"])
                    for d in result.details.get("spans") or ()
                    if isinstance(d, dict) and all(isinstance(d.get(k), int) for k in ("start", "end"))
                )
                self._to_review.append(
                    _ReviewCandidate(
                        item.project_id,
                        item.trace_id,
                        rule,
                        result.value,
                        result.passed,
                        _threshold(prepared.scorer),
                        spans,
                        "detector" if prepared.definition.scorer.get("type") == "hallucination" else "online",
                    )
                )
            return Outcome(item, SCORED, score=score, cost_usd=cost)
        if result.error is not None and result.details.get("retryable", True):
            return self._failed(item, result.error, cost)
        if result.error is not None:  # a refusal or an unreadable verdict: asking again costs, same answer
            return Outcome(item, UNMEASURED, reason=result.error, cost_usd=cost)
        return Outcome(item, UNMEASURED, reason=result.reason or "unmeasured", cost_usd=cost)

    def _send_to_review(self, candidates: list[_ReviewCandidate]) -> int:
        """Put the candidates their rules want in review queues (made when missing); how many went."""
        if self._review is None:
            self._review = ReviewService(self.service.store)
        sent = 0
        for c in candidates:
            other = None
            if c.rule.with_ is not None:
                facts = self.service.online.score_facts(c.project_id, [c.trace_id])[c.trace_id]
                other = next((v for n, v, _ in facts if n == c.rule.with_ and v is not None), None)
            reason = c.rule.wants(c.value, c.passed, c.threshold, other)
            if reason is None:
                continue
            try:
                self._review.ensure_queue(c.project_id, c.rule.queue)
                sent += self._review.enqueue(
                    c.trace_id, c.rule.queue, reason, project_id=c.project_id, spans=c.spans, source=c.source
                )
            except ReviewError as exc:  # a span the review screen cannot take, a trace deleted since
                log.warning("online evaluators: could not send trace %s to review: %s", c.trace_id, exc)
        return sent

    async def _score(self, prepared: _Prepared, item: WorkItem, sample: Sample, trace_id: str) -> ScoreResult:
        """A judge scorer's verdict, its calls in a trace of their own (``online-eval NAME``)."""
        attributes = TraceAttributes(
            name=f"{JUDGE_TRACE_PREFIX}{prepared.name}",
            tags=("online-eval",),
            metadata={
                "evaluator": prepared.name,
                "evaluator_version": item.version,
                "scored_trace": item.trace_id,
            },
        )
        context = CallContext(trace_id, project_id=item.project_id, name=attributes.name, trace=attributes)
        token = current_call.set(context)
        try:
            return await prepared.scorer.score(sample)
        except Exception as exc:  # the scorers report failures as results; this is a bug in one
            return ScoreResult.unmeasured(f"{type(exc).__name__}: {exc}")
        finally:
            current_call.reset(token)


def _threshold(scorer: Scorer) -> float:
    """The value at which the scorer passes an answer (0.5 when it does not say)."""
    found = getattr(scorer, "threshold", None)
    return float(found) if isinstance(found, int | float) else 0.5


async def _score_all(work: list[tuple[Scorer, Sample]]) -> list[ScoreResult]:
    """Local scorers' verdicts on a batch (run in a thread, on a loop of its own)."""

    async def one(scorer: Scorer, sample: Sample) -> ScoreResult:
        try:
            return await scorer.score(sample)
        except Exception as exc:  # the scorers report failures as results; this is a bug in one
            return ScoreResult.unmeasured(f"{type(exc).__name__}: {exc}")

    return list(await asyncio.gather(*(one(scorer, sample) for scorer, sample in work)))


def _sample(trace: Trace, definition: EvaluatorDefinition) -> Sample:
    """What a scorer sees of a trace: its input and output, the context the definition names, its
    metadata, latency and cost."""
    return Sample(
        item_id=trace.id,
        input={"input": trace.input or "", "question": trace.input or ""},
        output=trace.output or "",
        context=_context(definition.context, trace.input, trace.metadata),
        metadata=trace.metadata,
        latency_ms=trace.latency_ms,
        cost_usd=trace.cost_usd,
    )


def _context(source: str, trace_input: str | None, metadata: dict[str, Any]) -> str | None:
    """The context a faithfulness scorer checks the output against, where the definition says."""
    if source == "input":
        return trace_input
    if source.startswith("metadata."):
        value = metadata.get(source.removeprefix("metadata."))
        if value is None:
            return None
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return "\n\n".join(value)
        return orjson.dumps(value).decode()
    return None
