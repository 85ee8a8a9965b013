"""The eval runner: every item of a dataset, ``repeats`` times, through the target and the scorers.

- Async with bounded concurrency (``spec.concurrency`` calls in flight at most). A 429 halves the
  limit (at most once per second) and the call is retried after its ``Retry-After`` (or an
  exponential backoff with jitter); successes raise the limit again by one per ``limit`` successes.
  5xx, timeouts and connection errors are retried too, ``spec.retries`` times.
- Items are streamed from the store page by page through a bounded queue, and results written in
  batches (every 500 results or 0.5 s), so memory stays flat in the size of the dataset.
- A response cache keyed by the target, the rendered request and the epoch (each epoch its own key):
  a re-run of the same spec makes no calls.
- Resumable: results are stored as they come; an interrupted run (Ctrl-C, a crash) is continued with
  ``resume=RUN_ID``, which runs only the (item, epoch) pairs without a stored result.
- Every call is traced (see :mod:`pilothouse.evals.targets`), the trace id kept on the result.
- A failed or timed-out target call, like a scorer or judge that cannot tell, is UNMEASURED: stored
  with its error, counted apart, never dropped and never a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pilothouse.domain.datasets import DatasetItem, DatasetVersion
from pilothouse.domain.evals import (
    CachedResponse,
    EvalResult,
    EvalRun,
    RunStatus,
    RunStore,
    ScoreRecord,
    SummaryBuilder,
)
from pilothouse.domain.money import Money
from pilothouse.domain.traces import ObservationKind, SpanRecord, Status
from pilothouse.evals.calls import CallContext, TargetError, current_call, eval_context
from pilothouse.evals.datasets import read_items
from pilothouse.evals.scoring import Sample, ScoreResult
from pilothouse.evals.spec import EvalSpec
from pilothouse.evals.targets import Prepared, TargetReply
from pilothouse.evals.templating import TemplateError
from pilothouse.gateway.recording import CallSpan

__all__ = ["AdaptiveLimit", "EvalStoreLike", "Progress", "RunError", "cache_key", "run_eval"]

FLUSH_ROWS = 500
PREPARE_BATCH = 500  # items rendered and looked up in the response cache at once (one query)
FLUSH_SECONDS = 0.5
MAX_BACKOFF_S = 30.0


class RunError(Exception):
    """A run that cannot start (unknown dataset, a run to resume that does not match)."""


class EvalStoreLike(RunStore, Protocol):
    """A :class:`RunStore` that also keeps datasets (``pilothouse.store.evals.EvalStore``)."""

    def import_items(
        self,
        project_id: str,
        name: str,
        items: Any,
        *,
        source: str | None = None,
        description: str | None = None,
    ) -> tuple[DatasetVersion, bool]:
        """Store items as a dataset version (the existing one when unchanged)."""
        ...

    def get_version(self, project_id: str, name: str, version: int | None = None) -> DatasetVersion | None:
        """A stored dataset version."""
        ...

    def get_version_by_id(self, version_id: str) -> DatasetVersion | None:
        """A stored dataset version by id."""
        ...

    def iter_items(self, version_id: str) -> Iterator[tuple[int, DatasetItem]]:
        """(position, item) of a version, in order."""
        ...


@dataclass
class Progress:
    """How far a run is: results done (including ones resumed from the store) of ``total``."""

    run_id: str
    total: int
    done: int = 0
    errors: int = 0
    cached: int = 0
    rate_limited: int = 0  # 429s seen (each retried)
    limit: int = 0  # the concurrency limit now


class AdaptiveLimit:
    """A semaphore whose size halves on a rate limit and grows back by one after ``limit`` successes in
    a row, up to ``maximum``. As in TCP congestion control, only a 429 to a call started after the
    last decrease decreases it again: the calls already in flight answer for the old limit."""

    def __init__(self, maximum: int) -> None:
        self.maximum = maximum
        self.limit = maximum
        self.in_use = 0
        self.peak = 0
        self.generation = 0  # bumped at every decrease
        self._successes = 0
        self._waiters: list[asyncio.Future[None]] = []

    async def acquire(self) -> int:
        """Wait for a free slot; returns the generation the call starts in."""
        while self.in_use >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self.in_use += 1
        self.peak = max(self.peak, self.in_use)
        return self.generation

    def release(self) -> None:
        """Give a slot back."""
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        free = self.limit - self.in_use
        while free > 0 and self._waiters:
            waiter = self._waiters.pop(0)
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    def rate_limited(self, generation: int) -> None:
        """A call started in ``generation`` got 429: halve the limit, once per generation."""
        self._successes = 0
        if generation >= self.generation:
            self.limit = max(1, self.limit // 2)
            self.generation += 1

    def succeeded(self) -> None:
        """A call went through: after ``limit`` of them in a row, one more slot."""
        if self.limit >= self.maximum:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            self.limit += 1
            self._wake()


def cache_key(
    identity: Mapping[str, Any], request: Mapping[str, Any], epoch: int, project_id: str = "default"
) -> str:
    """The response cache key of one call: the project, the target, the rendered request and the
    epoch. The project is part of it so that one project's runs never read another's answers (nor
    learn, from a fast cached run, what another project asked)."""
    document = json.dumps(
        {"project": project_id, "target": identity, "request": request, "epoch": epoch},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(document.encode()).hexdigest()


@dataclass
class _Unit:
    """One item in one epoch, its request rendered and its cached answer (if any) looked up."""

    position: int
    item: DatasetItem
    epoch: int
    prepared: Prepared | None = None
    error: str | None = None  # the request could not be built
    key: str | None = None  # the response cache key (None: cache off)
    cached: CachedResponse | None = None


@dataclass
class _Buffers:
    results: list[EvalResult] = field(default_factory=list)
    cache: list[tuple[str, CachedResponse]] = field(default_factory=list)
    spans: list[SpanRecord] = field(default_factory=list)

    def take(self) -> tuple[list[EvalResult], list[tuple[str, CachedResponse]], list[SpanRecord]]:
        taken = (self.results, self.cache, self.spans)
        self.results, self.cache, self.spans = [], [], []
        return taken


class _Run:
    def __init__(
        self,
        spec: EvalSpec,
        store: EvalStoreLike,
        run: EvalRun,
        progress: Progress,
        on_progress: Callable[[Progress, EvalResult], None] | None,
        builder: SummaryBuilder,
    ) -> None:
        self.spec = spec
        self.store = store
        self.run = run
        self.progress = progress
        self.on_progress = on_progress
        self.builder = builder
        self.limit = AdaptiveLimit(spec.concurrency)
        self.buffers = _Buffers()
        self.flush_lock = asyncio.Lock()
        self.last_flush = time.monotonic()
        self.identity = spec.target.identity()
        self.rng = random.Random()
        self.trace_local = spec.target.kind != "model"  # model targets trace their own calls

    # -- storage --------------------------------------------------------------------------------------

    def _write(
        self,
        results: list[EvalResult],
        cache: list[tuple[str, CachedResponse]],
        spans: list[SpanRecord],
    ) -> None:
        if spans:
            self.store.write_spans(spans)
        if cache:
            self.store.cache_put(cache)
        self.store.write_results(results)

    async def flush(self) -> None:
        """Write what is buffered (one writer at a time, in a worker thread)."""
        async with self.flush_lock:
            taken = self.buffers.take()
            self.last_flush = time.monotonic()
            if any(taken):
                await asyncio.to_thread(self._write, *taken)

    def flush_now(self) -> None:
        """Write what is buffered from this thread (on the way out of an interrupted run)."""
        taken = self.buffers.take()
        if any(taken):
            self._write(*taken)

    async def periodic_flush(self, stop: asyncio.Event) -> None:
        """Flush every FLUSH_SECONDS until ``stop`` is set. Never cancelled: a flush cancelled while its
        thread writes would release the lock during the write and lose the write's error (and with
        it the results it took from the buffers)."""
        while True:
            try:
                await asyncio.wait_for(stop.wait(), FLUSH_SECONDS)
                return
            except TimeoutError:
                pass
            if time.monotonic() - self.last_flush >= FLUSH_SECONDS:
                await self.flush()

    def span(self, record: SpanRecord) -> None:
        self.buffers.spans.append(record)

    # -- one item, one epoch --------------------------------------------------------------------------

    async def call_target(self, prepared: Prepared, context: CallContext) -> TargetReply:
        attempt = 0
        while True:
            generation = await self.limit.acquire()
            failure: TargetError
            try:
                async with asyncio.timeout(self.spec.timeout_s):
                    reply = await self.spec.target.call(prepared, context)
            except TimeoutError:
                failure = TargetError(f"timed out after {self.spec.timeout_s:g} s", retryable=True)
            except TargetError as exc:
                failure = exc
            else:
                self.limit.succeeded()
                return reply
            finally:
                self.limit.release()
            if failure.status == 429:
                self.limit.rate_limited(generation)
                self.progress.rate_limited += 1
            if not failure.retryable or attempt >= self.spec.retries:
                raise failure
            attempt += 1
            await asyncio.sleep(self._backoff(attempt, failure.retry_after_s))

    def _backoff(self, attempt: int, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(MAX_BACKOFF_S, retry_after_s) * (1 + 0.2 * self.rng.random())
        return min(MAX_BACKOFF_S, 0.25 * 2.0 ** (attempt - 1)) * (0.5 + self.rng.random() / 2)

    def prepare(self, batch: list[tuple[int, DatasetItem, int]]) -> list[_Unit]:
        """Render a batch of (position, item, epoch) and look their answers up in the cache at once."""
        units = []
        for position, item, epoch in batch:
            unit = _Unit(position, item, epoch)
            try:
                unit.prepared = self.spec.target.prepare(item)
            except (TemplateError, TargetError) as exc:
                unit.error = f"cannot build the request: {exc}"
            else:
                if self.spec.cache:
                    unit.key = cache_key(self.identity, unit.prepared.request, epoch, self.run.project_id)
            units.append(unit)
        found = self.store.cache_get_many([u.key for u in units if u.key is not None])
        for unit in units:
            unit.cached = found.get(unit.key) if unit.key is not None else None
        return units

    async def evaluate(self, unit: _Unit) -> EvalResult:
        item = unit.item
        context = eval_context(self.run.id, item.id, unit.epoch, self.run.project_id)
        token = current_call.set(context)
        try:
            return await self._evaluate(unit, context)
        finally:
            current_call.reset(token)

    async def _evaluate(self, unit: _Unit, context: CallContext) -> EvalResult:
        item, epoch, position, cached = unit.item, unit.epoch, unit.position, unit.cached
        prepared = unit.prepared
        if prepared is None:
            return self._unmeasured(unit, context, unit.error or "no request")
        if cached is not None:
            reply = TargetReply(
                cached.output,
                cached.input_tokens,
                cached.output_tokens,
                cached.cost_usd,
                cached.latency_ms,
                None,
            )
        else:
            span = self._local_span(context, prepared)
            try:
                reply = await self.call_target(prepared, context)
            except TargetError as exc:
                if span is not None:
                    self.span(span.record(status=Status.ERROR, error=exc.message))
                return self._unmeasured(unit, context, exc.message)
            if span is not None:
                self.span(span.record(status=Status.OK, output=reply.output))
            if unit.key is not None:
                entry = CachedResponse(
                    reply.output, reply.input_tokens, reply.output_tokens, reply.cost_usd, reply.latency_ms
                )
                self.buffers.cache.append((unit.key, entry))
        sample = Sample(
            item_id=item.id,
            input=item.input,
            messages=prepared.messages,
            output=reply.output,
            expected=item.expected,
            context=_context_of(item),
            metadata=item.metadata,
            latency_ms=reply.latency_ms,
            cost_usd=reply.cost_usd,
        )
        verdicts = await self._score(sample)
        if len(verdicts) == 1:  # the usual case, without the sums' generators
            judge_in = verdicts[0].judge_input_tokens
            judge_out = verdicts[0].judge_output_tokens
            judge_cost = verdicts[0].judge_cost_usd
        else:
            judge_in = _total(v.judge_input_tokens for v in verdicts)
            judge_out = _total(v.judge_output_tokens for v in verdicts)
            judge_cost = _total_cost(verdicts)
        return EvalResult(
            run_id=self.run.id,
            item_id=item.id,
            epoch=epoch,
            position=position,
            output=reply.output,
            latency_ms=reply.latency_ms,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            cost_usd=reply.cost_usd,
            judge_input_tokens=judge_in,
            judge_output_tokens=judge_out,
            judge_cost_usd=judge_cost,
            trace_id=None if cached is not None else (reply.trace_id or context.trace_id),
            cached=cached is not None,
            scores=tuple(
                ScoreRecord(scorer.name, v.value, v.passed, v.error, v.reason, v.details or None)
                for scorer, v in zip(self.spec.scorers, verdicts, strict=True)
            ),
            created_ns=time.time_ns(),
        )

    async def _score(self, sample: Sample) -> list[ScoreResult]:
        scorers = self.spec.scorers
        if len(scorers) == 1:
            return [await _score_one(scorers[0], sample)]
        return list(await asyncio.gather(*(_score_one(s, sample) for s in scorers)))

    def _unmeasured(self, unit: _Unit, context: CallContext, error: str) -> EvalResult:
        scores = tuple(ScoreRecord(s.name, None, None, f"target failed: {error}") for s in self.spec.scorers)
        return EvalResult(
            self.run.id,
            unit.item.id,
            unit.epoch,
            unit.position,
            None,
            error=error,
            trace_id=context.trace_id,
            scores=scores,
            created_ns=time.time_ns(),
        )

    def _local_span(self, context: CallContext, prepared: Prepared) -> CallSpan | None:
        """The span of a callable or HTTP target call, started now (model targets record their own)."""
        if not self.trace_local:
            return None
        span = CallSpan(
            project_id=self.run.project_id,
            operation="eval target",
            request=dict(prepared.request),
            key_id=None,
            user_id=None,
            trace_id=context.trace_id,
            parent_id=None,
            name=f"eval target {self.spec.target.describe()}"[:200],
            kind=ObservationKind.SPAN,
            trace=context.trace,
        )
        span.extra.update(context.attributes)
        return span

    async def record(self, result: EvalResult) -> None:
        self.buffers.results.append(result)
        self.builder.add(result)
        p = self.progress
        p.done += 1
        p.errors += result.error is not None
        p.cached += result.cached
        p.limit = self.limit.limit
        if self.on_progress is not None:
            self.on_progress(p, result)
        if len(self.buffers.results) >= FLUSH_ROWS:
            await self.flush()


async def _score_one(scorer: Any, sample: Sample) -> ScoreResult:
    try:
        result: ScoreResult = await scorer.score(sample)
    except Exception as exc:  # a plugin scorer's bug: unmeasured, never the end of the run
        return ScoreResult.unmeasured(f"{type(exc).__name__}: {exc}")
    return result


def _context_of(item: DatasetItem) -> str | None:
    for source in (item.input, item.metadata):
        value = source.get("context")
        if isinstance(value, str):
            return value
        if isinstance(value, list):
            return "\n\n".join(str(v) for v in value)
    return None


def _total(values: Any) -> int | None:
    present = [v for v in values if v is not None]
    return sum(present) if present else None


def _total_cost(verdicts: list[ScoreResult]) -> Money | None:
    costs = [v.judge_cost_usd for v in verdicts if v.judge_cost_usd is not None]
    return Money.sum(costs) if costs else None


async def _units(
    items: Iterator[tuple[int, DatasetItem]], epochs: int, done: set[tuple[str, int]]
) -> AsyncIterator[tuple[int, DatasetItem, int]]:
    for position, item in items:
        for epoch in range(epochs):
            if (item.id, epoch) not in done:
                yield position, item, epoch
        if position % 200 == 0:
            await asyncio.sleep(0)  # let workers run between pages of the dataset


def resolve_dataset(spec: EvalSpec, store: EvalStoreLike) -> DatasetVersion:
    """The stored dataset version a spec evaluates: a file or inline items are imported (the version
    already stored when unchanged), a name is looked up."""
    ref = spec.dataset
    if ref.path is not None:
        version, _ = store.import_items(
            spec.project, ref.path.stem, read_items(ref.path), source=str(ref.path)
        )
        return version
    if ref.items is not None:
        name = spec.name or "inline"
        version, _ = store.import_items(spec.project, name, ref.items, source="inline")
        return version
    assert ref.name is not None
    found = store.get_version(spec.project, ref.name, ref.version)
    if found is None:
        which = f"version {ref.version} of " if ref.version else ""
        raise RunError(f"no {which}dataset named {ref.name!r} in project {spec.project!r}")
    return found


async def run_eval(
    spec: EvalSpec,
    store: EvalStoreLike,
    *,
    resume: str | None = None,
    on_start: Callable[[EvalRun], None] | None = None,
    on_progress: Callable[[Progress, EvalResult], None] | None = None,
) -> EvalRun:
    """Run a spec (or resume the interrupted run ``resume``) and return the stored run with its
    summary. Ctrl-C or a cancellation stores what is done and marks the run interrupted."""
    scorer_names = [s.name for s in spec.scorers]
    if resume is not None:
        run = store.get_run(resume)
        if run is None:
            raise RunError(f"no run {resume!r} to resume")
        if run.status is RunStatus.COMPLETED:
            raise RunError(f"run {run.id} is already complete")
        if list(run.scorers) != scorer_names or run.epochs != spec.repeats:
            raise RunError(f"run {run.id} was started with other scorers or repeats than this spec")
        version = store.get_version_by_id(run.dataset_version_id or "")
        if version is None:
            raise RunError(f"the dataset of run {run.id} is no longer stored")
        done = store.completed_keys(run.id)
        store.set_run_status(run.id, RunStatus.RUNNING)
    else:
        version = resolve_dataset(spec, store)
        run = store.create_run(
            spec.project,
            name=spec.name,
            spec=spec.raw,
            dataset=version.name,
            dataset_version_id=version.id,
            dataset_version=version.version,
            target=spec.target.describe(),
            epochs=spec.repeats,
            items_total=version.item_count,
            scorers=scorer_names,
        )
        done = set()
    builder = SummaryBuilder({s.name: s.weight for s in spec.scorers})
    if done:
        builder.add_all(store.iter_results(run.id))
    progress = Progress(run.id, version.item_count * spec.repeats, done=len(done), limit=spec.concurrency)
    if on_start is not None:
        on_start(run)
    state = _Run(spec, store, run, progress, on_progress, builder)
    status = RunStatus.FAILED
    try:
        await _execute(state, store, version, done)
        status = RunStatus.COMPLETED
    except (asyncio.CancelledError, KeyboardInterrupt):
        status = RunStatus.INTERRUPTED
        raise
    finally:
        state.flush_now()
        store.set_run_status(run.id, status, builder.summary())
    finished = store.get_run(run.id)
    assert finished is not None
    return finished


async def _execute(
    state: _Run, store: EvalStoreLike, version: DatasetVersion, done: set[tuple[str, int]]
) -> None:
    spec = state.spec
    opened: list[Any] = []
    try:
        await spec.target.start(state.span)
        opened.append(spec.target)
        for judge in spec.judges:
            await judge.model.start(state.span)
            opened.append(judge.model)
        queue: asyncio.Queue[_Unit | None] = asyncio.Queue(max(PREPARE_BATCH, spec.concurrency * 2))

        async def feed(batch: list[tuple[int, DatasetItem, int]]) -> None:
            for unit in state.prepare(batch):
                await queue.put(unit)

        async def produce() -> None:
            batch: list[tuple[int, DatasetItem, int]] = []
            async for unit in _units(store.iter_items(version.id), spec.repeats, done):
                batch.append(unit)
                if len(batch) >= PREPARE_BATCH:
                    await feed(batch)
                    batch = []
            await feed(batch)
            for _ in range(spec.concurrency):
                await queue.put(None)

        async def work() -> None:
            while (unit := await queue.get()) is not None:
                result = await state.evaluate(unit)
                await state.record(result)

        stop = asyncio.Event()
        flusher = asyncio.create_task(state.periodic_flush(stop))
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(produce())
                for _ in range(spec.concurrency):
                    group.create_task(work())
        finally:
            stop.set()
            await flusher  # a flush under way finishes (or raises) before the last one
        await state.flush()
    finally:
        for thing in reversed(opened):
            with contextlib.suppress(Exception):
                await thing.close()
