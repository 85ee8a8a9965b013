"""Dashboard arithmetic: time windows, series and breakdowns from rollup rows (exact), and breakdowns
from a stratified sample of traces (estimates, weighted by what the rollups counted in each stratum).

Pure functions over the rows :mod:`pilothouse.store.analytics` returns.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pilothouse.domain.money import Money
from pilothouse.domain.sketch import quantiles
from pilothouse.store.analytics import RollupRow, SampledCall
from pilothouse.store.breakdowns import DimensionGroup

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# range -> (seconds, bucket seconds): about 60-170 points per chart
RANGES: dict[str, tuple[int, int]] = {
    "1h": (3600, 60),
    "24h": (86400, 900),
    "7d": (7 * 86400, 3600),
    "30d": (30 * 86400, 21600),
}
SAMPLE_TRACES = 500  # traces read for the sampled breakdowns, shared out over the range's buckets
NONE_LABELS = {"user": "(no user)", "key": "(no key)", "prompt": "(no prompt)", "tag": "(untagged)"}


class InvalidRange(ValueError):
    """A range that is not one of :data:`RANGES`."""


@dataclass(frozen=True, slots=True)
class Window:
    """A time range cut into equal buckets, aligned to the bucket size."""

    label: str
    start_s: int
    end_s: int
    bucket_s: int

    @property
    def buckets(self) -> list[int]:
        """Start of every bucket."""
        return list(range(self.start_s, self.end_s, self.bucket_s))

    @property
    def start_ns(self) -> int:
        """Start in nanoseconds."""
        return self.start_s * 1_000_000_000

    @property
    def end_ns(self) -> int:
        """End in nanoseconds."""
        return self.end_s * 1_000_000_000

    @property
    def seconds(self) -> int:
        """Length of the window."""
        return self.end_s - self.start_s

    def strata(self) -> list[tuple[int, int]]:
        """Every bucket as [start_ns, end_ns)."""
        return [(b * 1_000_000_000, (b + self.bucket_s) * 1_000_000_000) for b in self.buckets]


def window(label: str | None, default: str = "24h", now_s: float | None = None) -> Window:
    """The window named ``label`` (one of :data:`RANGES`) ending now; raises :class:`InvalidRange`."""
    label = label or default
    if label not in RANGES:
        raise InvalidRange(f"'range' must be one of {', '.join(RANGES)}, not {label!r}")
    seconds, bucket = RANGES[label]
    now = int(time.time() if now_s is None else now_s)
    end = (now // bucket + 1) * bucket
    return Window(label, end - seconds, end, bucket)


@dataclass(slots=True)
class Totals:
    """Sums over model calls, with their latency histogram."""

    requests: float = 0
    errors: float = 0  # model errors (refusals apart)
    refused: float = 0  # calls the gateway turned away (unknown model, limits, budgets)
    input_tokens: float = 0
    output_tokens: float = 0
    cache_read_tokens: float = 0
    cost_usd: Money = Money.ZERO
    unpriced: float = 0
    saved_usd: Money = Money.ZERO
    latency_hist: npt.NDArray[np.int64] | None = None
    ttft_ms: list[float] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def tokens(self) -> float:
        """Input (with cache) plus output tokens."""
        return self.input_tokens + self.output_tokens + self.cache_read_tokens

    @property
    def error_rate(self) -> float | None:
        """Model errors over the requests an upstream was asked (refusals left out of both)."""
        asked = self.requests - self.refused
        return self.errors / asked if asked > 0 else None

    def latency(self, q: float) -> float | None:
        """A latency quantile: from the histogram (rollups) or the sampled values."""
        if self.latency_hist is not None:
            return quantiles(self.latency_hist.tolist(), (q,))[0]
        return _quantile(self.latencies_ms, q)

    @property
    def p50(self) -> float | None:
        """Median latency (ms)."""
        return self.latency(0.5)

    @property
    def p95(self) -> float | None:
        """95th percentile latency (ms)."""
        return self.latency(0.95)

    @property
    def ttft_p50(self) -> float | None:
        """Median time to first token of the (sampled) streamed calls."""
        return _quantile(self.ttft_ms, 0.5)


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _add_row(total: Totals, r: RollupRow) -> None:
    s = r.sums
    total.requests += s.count
    total.errors += s.errors
    total.refused += s.refused
    total.input_tokens += s.input_tokens + s.cache_write_tokens
    total.output_tokens += s.output_tokens
    total.cache_read_tokens += s.cache_read_tokens
    total.cost_usd += s.cost_usd
    total.unpriced += s.unpriced
    if total.latency_hist is None:
        total.latency_hist = r.latency_hist.copy()
    else:
        total.latency_hist += r.latency_hist


def rollup_totals(rows: Iterable[RollupRow]) -> Totals:
    """Everything summed."""
    total = Totals()
    for r in rows:
        _add_row(total, r)
    return total


def rollup_groups(rows: Iterable[RollupRow], key: Callable[[RollupRow], str]) -> list[tuple[str, Totals]]:
    """Totals per group, most requests first."""
    groups: dict[str, Totals] = {}
    for r in rows:
        _add_row(groups.setdefault(key(r) or "(none)", Totals()), r)
    return sorted(groups.items(), key=lambda kv: (-kv[1].requests, kv[0]))


def dimension_totals(dimension: str, groups: Iterable[DimensionGroup]) -> list[tuple[str, Totals]]:
    """Exact totals per value of a dimension (from the dimension rollups), in the order given; the
    value "" (no user, no key, untagged) named as in :data:`NONE_LABELS`."""
    out = []
    for g in groups:
        s = g.sums
        out.append(
            (
                g.value or NONE_LABELS[dimension],
                Totals(
                    requests=s.count,
                    errors=s.errors,
                    refused=s.refused,
                    input_tokens=s.input_tokens + s.cache_write_tokens,
                    output_tokens=s.output_tokens,
                    cache_read_tokens=s.cache_read_tokens,
                    cost_usd=s.cost_usd,
                    unpriced=s.unpriced,
                    latency_hist=g.latency_hist,
                ),
            )
        )
    return out


def rollup_series(rows: Iterable[RollupRow], win: Window) -> dict[str, list[Any]]:
    """Per bucket: time, requests, errors, tokens in/out, cost, latency p50/p95 (None where empty)."""
    per_bucket: dict[int, Totals] = {}
    for r in rows:
        _add_row(per_bucket.setdefault(r.bucket_s, Totals()), r)
    out: dict[str, list[Any]] = {
        k: [] for k in ("t", "requests", "errors", "input", "output", "cost", "p50", "p95")
    }
    for b in win.buckets:
        tot = per_bucket.get(b)
        out["t"].append(b)
        out["requests"].append(tot.requests if tot else 0)
        out["errors"].append(tot.errors if tot else 0)
        out["input"].append(tot.input_tokens + tot.cache_read_tokens if tot else 0)
        out["output"].append(tot.output_tokens if tot else 0)
        out["cost"].append(tot.cost_usd if tot else Money.ZERO)
        out["p50"].append(tot.p50 if tot else None)
        out["p95"].append(tot.p95 if tot else None)
    return out


def cost_series_by_model(rows: Iterable[RollupRow], win: Window, top: int = 6) -> dict[str, list[Any]]:
    """Spend per bucket for the ``top`` costliest models (the rest summed as "other")."""
    rows = list(rows)
    spend: dict[str, Money] = {}
    for r in rows:
        spend[r.model or "(none)"] = spend.get(r.model or "(none)", Money.ZERO) + r.sums.cost_usd
    leaders = [m for m, _ in sorted(spend.items(), key=lambda kv: -kv[1].pico)[:top]]
    names = leaders + (["other"] if len(spend) > top else [])
    index = {b: i for i, b in enumerate(win.buckets)}
    series = {name: [Money.ZERO] * len(index) for name in names}
    for r in rows:
        i = index.get(r.bucket_s)
        if i is None:
            continue
        name = r.model or "(none)"
        series[name if name in leaders else "other"][i] += r.sums.cost_usd
    return {"t": win.buckets, **series}


@dataclass(frozen=True, slots=True)
class Sample:
    """Sampled model calls with the weight of each stratum (what the rollups counted there over what
    was sampled), so that sums over the sample estimate sums over the range."""

    calls: list[SampledCall]
    weights: dict[int, float]
    sampled: int
    total: int

    @property
    def exact(self) -> bool:
        """True when every call of the range is in the sample."""
        return self.sampled >= self.total


def weigh_sample(calls: list[SampledCall], rows: Iterable[RollupRow], win: Window) -> Sample:
    """The sample with its per-stratum weights (strata are the window's buckets)."""
    counted: dict[int, int] = {}
    index = {b: i for i, b in enumerate(win.buckets)}
    for r in rows:
        i = index.get(r.bucket_s)
        if i is not None:
            counted[i] = counted.get(i, 0) + r.sums.count
    sampled: dict[int, int] = {}
    for c in calls:
        sampled[c.stratum] = sampled.get(c.stratum, 0) + 1
    weights = {i: max(1.0, counted.get(i, 0) / n) for i, n in sampled.items()}
    return Sample(calls, weights, len(calls), sum(counted.values()))


def sample_groups(sample: Sample, key: Callable[[SampledCall], Iterable[str]]) -> list[tuple[str, Totals]]:
    """Estimated totals per group (a call in several groups, such as tags, counts in each)."""
    groups: dict[str, Totals] = {}
    for c in sample.calls:
        w = sample.weights.get(c.stratum, 1.0)
        for name in key(c):
            tot = groups.setdefault(name, Totals())
            tot.requests += w
            tot.errors += w * c.error
            tot.input_tokens += w * c.input_tokens
            tot.output_tokens += w * c.output_tokens
            tot.cache_read_tokens += w * c.cache_read_tokens
            if c.cost_usd is None:
                tot.unpriced += w
            else:
                tot.cost_usd += w * c.cost_usd
            tot.saved_usd += w * c.saved_usd
            tot.latencies_ms.append(c.latency_ms)
            if c.ttft_ms is not None:
                tot.ttft_ms.append(c.ttft_ms)
    return sorted(groups.items(), key=lambda kv: (-kv[1].cost_usd.pico, -kv[1].requests, kv[0]))


def sample_totals(sample: Sample) -> Totals:
    """Estimated totals over the range (cache savings and TTFT are only in the sample)."""
    groups = sample_groups(sample, lambda _c: ("all",))
    return groups[0][1] if groups else Totals()


def ttft_series(sample: Sample, win: Window) -> list[float | None]:
    """Median TTFT of the sampled streamed calls per bucket (None where there are none)."""
    per: dict[int, list[float]] = {}
    for c in sample.calls:
        if c.ttft_ms is not None:
            per.setdefault(c.stratum, []).append(c.ttft_ms)
    return [statistics.median(per[i]) if i in per else None for i in range(len(win.buckets))]


def sample_plan(rows: Iterable[RollupRow], win: Window) -> list[tuple[int, int, int, int]]:
    """Which buckets to sample and how many traces from each: :data:`SAMPLE_TRACES` shared in
    proportion to the model calls the rollups counted per bucket (empty buckets are skipped, a bucket
    with fewer calls than its share is read whole): (bucket index, start_ns, end_ns, traces) each."""
    index = {b: i for i, b in enumerate(win.buckets)}
    counted: dict[int, int] = {}
    for r in rows:
        i = index.get(r.bucket_s)
        if i is not None:
            counted[i] = counted.get(i, 0) + r.sums.count
    total = sum(counted.values())
    strata = win.strata()
    chosen = sorted(i for i, n in counted.items() if n > 0)
    return [(i, *strata[i], max(1, math.ceil(SAMPLE_TRACES * counted[i] / total))) for i in chosen]


def key_of(call: SampledCall) -> tuple[str]:
    """Group of a call by virtual key."""
    return (call.key_id or "(no key)",)


def user_of(call: SampledCall) -> tuple[str]:
    """Group of a call by end user."""
    return (call.user_id or "(no user)",)


def prompt_of(call: SampledCall) -> tuple[str]:
    """Group of a call by prompt and version."""
    return (call.prompt or "(no prompt)",)


def tags_of(call: SampledCall) -> tuple[str, ...]:
    """Groups of a call by tag."""
    return call.tags or ("(untagged)",)
