"""What an eval run produces: per item and epoch an :class:`EvalResult` (the output, its cost, one
:class:`ScoreRecord` per scorer), per run an :class:`EvalRun` with its :class:`RunSummary`; and the
:class:`RunStore` interface the runner writes them through (``pilothouse.store.evals.EvalStore`` is the
SQL implementation).

A score's ``value`` None is UNMEASURED: the target failed or timed out, or the scorer or its judge could
not tell. Unmeasured results are stored and counted as such, never dropped and never counted as
failures.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from pilothouse.domain.money import Money
from pilothouse.domain.traces import SpanRecord

__all__ = [
    "CachedResponse",
    "EvalResult",
    "EvalRun",
    "MetricSummary",
    "RunStatus",
    "RunStore",
    "RunSummary",
    "ScoreRecord",
    "SummaryBuilder",
]


class RunStatus(StrEnum):
    """Where a run stands. An interrupted run can be resumed (``eval run --resume ID``)."""

    RUNNING = "running"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ScoreRecord:
    """One scorer's verdict on one item and epoch; ``value`` None is unmeasured. ``details``: what the
    scorer said besides (the scorer's ``ScoreResult.details``: unsupported spans, a judge's verdicts;
    stored bounded, :mod:`pilothouse.domain.score_details`); None when it said nothing more, and in
    runs stored before details were kept."""

    scorer: str
    value: float | None
    passed: bool | None = None
    error: str | None = None
    reason: str | None = None
    details: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class EvalResult:
    """The target's answer to one item in one epoch, what it cost, and its scores.

    Target and judge usage are kept apart: ``input_tokens``/``output_tokens``/``cost_usd`` are the
    target call's, ``judge_*`` the sum over the judge calls of every scorer. A cost of None is
    unknown (no price), never free. ``error`` set: the target failed, and every score is unmeasured.
    ``trace_id``: the trace of the target call (and of the judge calls) in the store or gateway."""

    run_id: str
    item_id: str
    epoch: int
    position: int  # the item's position in the dataset (1-based), for ordering
    output: str | None
    error: str | None = None
    latency_ms: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: Money | None = None
    judge_input_tokens: int | None = None
    judge_output_tokens: int | None = None
    judge_cost_usd: Money | None = None
    trace_id: str | None = None
    cached: bool = False
    scores: tuple[ScoreRecord, ...] = ()
    created_ns: int = 0

    def score(self, name: str) -> ScoreRecord | None:
        """The score of one scorer, or None when it has none."""
        return next((s for s in self.scores if s.scorer == name), None)


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A target answer kept in the response cache: a re-run with the same request reuses it."""

    output: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: Money | None = None
    latency_ms: float | None = None


@dataclass(frozen=True, slots=True)
class MetricSummary:
    """One scorer over a run: mean of the measured values (items weighted by their epochs), pass rate
    at the scorer's threshold, and how many values were unmeasured. ``low``/``high``: a normal 95%
    interval of the mean over values (the gate uses the proper per-item statistics)."""

    name: str
    weight: float
    measured: int
    unmeasured: int
    mean: float | None
    low: float | None
    high: float | None
    passed: int
    binary: bool  # every measured value was 0 or 1

    @property
    def pass_rate(self) -> float | None:
        """Share of the measured values that passed."""
        return self.passed / self.measured if self.measured else None


@dataclass(frozen=True, slots=True)
class RunSummary:
    """The run's totals: results, failed target calls, cache hits, target and judge usage and cost
    (``*_unpriced``: calls whose cost is unknown; answers from the cache cost nothing and are not in
    the target's tokens and cost), and each metric."""

    results: int = 0
    errors: int = 0
    cached: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: Money = Money.ZERO
    unpriced: int = 0
    judge_input_tokens: int = 0
    judge_output_tokens: int = 0
    judge_cost_usd: Money = Money.ZERO
    judge_unpriced: int = 0
    latency_ms_mean: float | None = None
    metrics: tuple[MetricSummary, ...] = ()
    weighted_score: float | None = None  # weighted mean of the metrics' means

    def metric(self, name: str) -> MetricSummary | None:
        """One metric's summary, by scorer name."""
        return next((m for m in self.metrics if m.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (amounts as float USD, as the store keeps amounts)."""
        data = asdict(self)
        data["metrics"] = [asdict(m) for m in self.metrics]
        for name in _SUMMARY_AMOUNTS:
            data[name] = data[name].usd
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunSummary:
        """Inverse of :meth:`as_dict`."""
        values = dict(data)
        values["metrics"] = tuple(MetricSummary(**m) for m in values.get("metrics") or ())
        for name in _SUMMARY_AMOUNTS:
            if name in values:
                values[name] = Money.from_usd(values[name])
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in known})


_SUMMARY_AMOUNTS = ("cost_usd", "judge_cost_usd")


@dataclass(frozen=True, slots=True)
class EvalRun:
    """A stored run: what was evaluated with what, and how it went."""

    id: str
    project_id: str
    name: str | None
    status: RunStatus
    spec: Mapping[str, Any]  # the spec as written (secrets redacted)
    dataset: str | None  # the dataset's name (or file)
    dataset_version_id: str | None
    dataset_version: int | None
    target: str  # the target in words, e.g. "model sim @ http://127.0.0.1:4000/v1"
    epochs: int
    items_total: int | None
    scorers: tuple[str, ...]
    created_ns: int
    finished_ns: int | None = None
    summary: RunSummary | None = None


@dataclass
class _MetricAccumulator:
    weight: float
    measured: int = 0
    unmeasured: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    passed: int = 0
    binary: bool = True

    def add(self, record: ScoreRecord) -> None:
        if record.value is None:
            self.unmeasured += 1
            return
        self.measured += 1
        self.total += record.value
        self.total_sq += record.value * record.value
        self.passed += bool(record.passed)
        self.binary &= record.value in (0.0, 1.0)

    def summary(self, name: str) -> MetricSummary:
        mean = self.total / self.measured if self.measured else None
        low = high = None
        if mean is not None and self.measured > 1:
            variance = max(0.0, (self.total_sq - self.measured * mean * mean) / (self.measured - 1))
            half = 1.96 * math.sqrt(variance / self.measured)
            low, high = mean - half, mean + half
            if self.binary:
                low, high = max(0.0, low), min(1.0, high)
        return MetricSummary(
            name, self.weight, self.measured, self.unmeasured, mean, low, high, self.passed, self.binary
        )


@dataclass
class SummaryBuilder:
    """Running totals over results as they come (constant memory); :meth:`summary` at any time."""

    weights: dict[str, float] = field(default_factory=dict)  # scorer name -> weight, in spec order
    _counts: dict[str, int] = field(default_factory=dict)
    _metrics: dict[str, _MetricAccumulator] = field(default_factory=dict)
    _latency_sum: float = 0.0
    _latency_n: int = 0
    _totals: dict[str, int] = field(default_factory=dict)
    _cost: Money = Money.ZERO
    _judge_cost: Money = Money.ZERO

    def __post_init__(self) -> None:
        self._metrics = {name: _MetricAccumulator(w) for name, w in self.weights.items()}

    def add(self, result: EvalResult) -> None:
        """Count one result."""
        t = self._totals
        t["results"] = t.get("results", 0) + 1
        t["errors"] = t.get("errors", 0) + (result.error is not None)
        t["cached"] = t.get("cached", 0) + result.cached
        if not result.cached:  # an answer from the cache cost nothing this time
            t["input_tokens"] = t.get("input_tokens", 0) + (result.input_tokens or 0)
            t["output_tokens"] = t.get("output_tokens", 0) + (result.output_tokens or 0)
        t["judge_input_tokens"] = t.get("judge_input_tokens", 0) + (result.judge_input_tokens or 0)
        t["judge_output_tokens"] = t.get("judge_output_tokens", 0) + (result.judge_output_tokens or 0)
        if result.error is None and not result.cached:
            if result.cost_usd is None:
                t["unpriced"] = t.get("unpriced", 0) + 1
            else:
                self._cost += result.cost_usd
        if result.judge_cost_usd is not None:
            self._judge_cost += result.judge_cost_usd
        elif result.judge_input_tokens:
            t["judge_unpriced"] = t.get("judge_unpriced", 0) + 1
        if result.latency_ms is not None and not result.cached:
            self._latency_sum += result.latency_ms
            self._latency_n += 1
        for record in result.scores:
            metric = self._metrics.get(record.scorer)
            if metric is None:
                metric = self._metrics[record.scorer] = _MetricAccumulator(1.0)
            metric.add(record)

    def add_all(self, results: Iterable[EvalResult]) -> None:
        """Count several results."""
        for result in results:
            self.add(result)

    def summary(self) -> RunSummary:
        """The totals so far."""
        t = self._totals
        metrics = tuple(acc.summary(name) for name, acc in self._metrics.items())
        weighted = [(m.weight, m.mean) for m in metrics if m.mean is not None and m.weight > 0]
        total_weight = sum(w for w, _ in weighted)
        return RunSummary(
            results=int(t.get("results", 0)),
            errors=int(t.get("errors", 0)),
            cached=int(t.get("cached", 0)),
            input_tokens=int(t.get("input_tokens", 0)),
            output_tokens=int(t.get("output_tokens", 0)),
            cost_usd=self._cost,
            unpriced=int(t.get("unpriced", 0)),
            judge_input_tokens=int(t.get("judge_input_tokens", 0)),
            judge_output_tokens=int(t.get("judge_output_tokens", 0)),
            judge_cost_usd=self._judge_cost,
            judge_unpriced=int(t.get("judge_unpriced", 0)),
            latency_ms_mean=self._latency_sum / self._latency_n if self._latency_n else None,
            metrics=metrics,
            weighted_score=sum(w * m for w, m in weighted) / total_weight if total_weight else None,
        )


class RunStore(Protocol):
    """What the runner needs from storage (``pilothouse.store.evals.EvalStore`` over SQL)."""

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
        """Store a new run (status running)."""
        ...

    def get_run(self, run_id: str) -> EvalRun | None:
        """A stored run."""
        ...

    def set_run_status(self, run_id: str, status: RunStatus, summary: RunSummary | None = None) -> None:
        """Mark a run running, completed, interrupted or failed (with its summary)."""
        ...

    def completed_keys(self, run_id: str) -> set[tuple[str, int]]:
        """(item id, epoch) of every result stored for a run (to resume it)."""
        ...

    def iter_results(self, run_id: str) -> Iterator[EvalResult]:
        """A run's results in item order, streamed."""
        ...

    def write_results(self, results: Sequence[EvalResult]) -> None:
        """Store results and their scores (results already stored are skipped)."""
        ...

    def cache_get_many(self, keys: Sequence[str]) -> dict[str, CachedResponse]:
        """The cached target answers of some keys (keys without one left out)."""
        ...

    def cache_put(self, entries: Sequence[tuple[str, CachedResponse]]) -> None:
        """Keep target answers (existing keys are left alone)."""
        ...

    def write_spans(self, records: Sequence[SpanRecord]) -> None:
        """Store trace spans of in-process target and judge calls."""
        ...
