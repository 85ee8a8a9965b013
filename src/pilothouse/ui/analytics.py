"""Dashboard arithmetic: time windows, series and breakdowns from rollup rows (exact: every figure,
TTFT and cache savings included, sums what ingest stored, whatever the number of traces).

Pure functions over the rows :mod:`pilothouse.store.analytics` returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pilothouse.domain.money import Money
from pilothouse.domain.sketch import quantiles
from pilothouse.store.analytics import RollupRow
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
    """Sums over model calls, with their latency histogram (and their TTFT histogram: the model
    rollups have one, the dimension rollups do not)."""

    requests: int = 0
    errors: int = 0  # model errors (refusals apart)
    refused: int = 0  # calls the gateway turned away (unknown model, limits, budgets)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cost_usd: Money = Money.ZERO
    unpriced: int = 0
    saved_usd: Money = Money.ZERO  # what caching saved against the full price
    latency_hist: npt.NDArray[np.int64] | None = None
    ttft_hist: npt.NDArray[np.int64] | None = None

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
        """A latency quantile, from the histogram (None without calls)."""
        if self.latency_hist is not None:
            return quantiles(self.latency_hist.tolist(), (q,))[0]
        return None

    @property
    def p50(self) -> float | None:
        """Median latency (ms)."""
        return self.latency(0.5)

    @property
    def p95(self) -> float | None:
        """95th percentile latency (ms)."""
        return self.latency(0.95)

    @property
    def streamed(self) -> int:
        """How many of the calls were streamed (have a time to first token)."""
        return int(self.ttft_hist.sum()) if self.ttft_hist is not None else 0

    @property
    def ttft_p50(self) -> float | None:
        """Median time to first token of the streamed calls (ms; None without any), from the
        histogram: within the sketch's bucket width (pilothouse.domain.sketch) of the true median."""
        if self.ttft_hist is None:
            return None
        return quantiles(self.ttft_hist.tolist(), (0.5,))[0]


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
    total.saved_usd += s.saved_usd
    if total.latency_hist is None:
        total.latency_hist = r.latency_hist.copy()
        total.ttft_hist = r.ttft_hist.copy()
    else:
        total.latency_hist += r.latency_hist
        total.ttft_hist += r.ttft_hist  # type: ignore[operator]  # set with latency_hist


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
                    saved_usd=s.saved_usd,
                    latency_hist=g.latency_hist,
                ),
            )
        )
    return out


def rollup_series(rows: Iterable[RollupRow], win: Window) -> dict[str, list[Any]]:
    """Per bucket: time, requests, errors, tokens in/out, cost, latency p50/p95 and TTFT p50 (None
    where empty)."""
    per_bucket: dict[int, Totals] = {}
    for r in rows:
        _add_row(per_bucket.setdefault(r.bucket_s, Totals()), r)
    out: dict[str, list[Any]] = {
        k: [] for k in ("t", "requests", "errors", "input", "output", "cost", "p50", "p95", "ttft")
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
        out["ttft"].append(tot.ttft_p50 if tot else None)
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
