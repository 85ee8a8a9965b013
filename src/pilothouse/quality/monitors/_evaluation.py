"""A monitor's step, as pure functions: compute its baseline and detector from the trailing window, then
feed it the samples that arrived since its cursor and say where it alarmed. No I/O and no clock (the
time is passed in); :mod:`._worker` reads the samples and stores what comes out.

One run of the detector: the baseline is computed when a monitor starts (from the ``baseline_s``
before it) and again every :data:`REBASELINE_NS` while no alert is open (nor a silence on), so a
baseline follows slow seasonal drift but never learns a fault it is alerting on. The statistic
carries over a new baseline. After an alarm the statistic starts again from zero."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from pilothouse.domain.monitors import Monitor, MonitorMetric, MonitorState
from pilothouse.domain.sketch import quantiles
from pilothouse.quality.monitors._statistics import (
    BernoulliCusum,
    GaussianCusum,
    design_bernoulli,
    gaussian_threshold,
)
from pilothouse.store.monitors import MinuteSample, ScoreSample

REBASELINE_NS = 24 * 3600 * 1_000_000_000
MIN_BASELINE_SAMPLES = 100  # scores (or calls, for the error rate) before a rate's baseline is trusted
MIN_BASELINE_MINUTES = 30  # minutes with calls before a per-minute series' baseline is trusted


def _p95(m: MinuteSample) -> float | None:
    return quantiles(m.latency_counts, [0.95])[0] if m.latency_counts else None


# What one minute of calls says, per continuous rollup metric (a registry: a new metric is a new entry).
MINUTE_VALUES: dict[MonitorMetric, Callable[[MinuteSample], float | None]] = {
    MonitorMetric.LATENCY_P95: _p95,
    MonitorMetric.COST_PER_REQUEST: lambda m: m.cost_usd / m.count,
    MonitorMetric.TOKENS_PER_REQUEST: lambda m: m.tokens / m.count,
}

LABELS: dict[MonitorMetric, str] = {
    MonitorMetric.SCORE_PASS_RATE: "pass rate",
    MonitorMetric.SCORE_MEAN: "mean score",
    MonitorMetric.ERROR_RATE: "error rate",
    MonitorMetric.LATENCY_P95: "latency p95 (ms)",
    MonitorMetric.COST_PER_REQUEST: "cost per request (USD)",
    MonitorMetric.TOKENS_PER_REQUEST: "tokens per request",
}


@dataclass(frozen=True, slots=True)
class Alarm:
    """Where the detector passed its threshold: the value since the estimated change (the last time
    the statistic was zero) against the baseline, over how many samples, and a sentence for people."""

    at_ns: int
    observed: float
    baseline: float
    samples: int
    statistic: float
    message: str


def baseline_from_scores(monitor: Monitor, values: Sequence[float], now_ns: int) -> MonitorState | None:
    """The state of a new run from a baseline of score values (None: too few to trust)."""
    if len(values) < MIN_BASELINE_SAMPLES:
        return None
    if monitor.metric is MonitorMetric.SCORE_PASS_RATE:
        threshold = monitor.threshold if monitor.threshold is not None else 0.5
        passes = sum(1 for v in values if v >= threshold)
        return _rate_state(monitor, passes, len(values), now_ns)
    return _continuous_state(monitor, values, now_ns)


def baseline_from_minutes(
    monitor: Monitor, minutes: Sequence[MinuteSample], now_ns: int
) -> MonitorState | None:
    """The state of a new run from a baseline of per-minute rollups (None: too little to trust)."""
    if monitor.metric is MonitorMetric.ERROR_RATE:
        calls = sum(m.count for m in minutes)
        if calls < MIN_BASELINE_SAMPLES:
            return None
        return _rate_state(monitor, sum(m.errors for m in minutes), calls, now_ns)
    value = MINUTE_VALUES[monitor.metric]
    values = [v for m in minutes if (v := value(m)) is not None]
    return _continuous_state(monitor, values, now_ns) if len(values) >= MIN_BASELINE_MINUTES else None


def designed_rate(events: float, trials: int) -> float:
    """The baseline rate the detector is designed for: the observed rate pulled towards one half by one
    event and one non-event (Laplace's rule of succession), so that a baseline of 100 passes out of
    100 is read as 0.990, not as certainty: a perfect small sample does not make two failures an
    alarm. At the baselines the simulation uses (2,000 samples) it moves the rate by < 0.0005."""
    return (events + 1) / (trials + 2)


def _rate_state(monitor: Monitor, events: int, trials: int, now_ns: int) -> MonitorState:
    shift = -monitor.shift if monitor.metric.watches_drop else monitor.shift
    detector = design_bernoulli(designed_rate(events, trials), shift, monitor.arl0)
    old = monitor.state
    # a statistic carried over a new baseline keeps its size in nats, not in units of the old scale
    statistic = old.statistic * detector.scale / old.scale if old.scale else 0.0
    return replace(
        old,
        statistic=statistic,
        baseline=events / trials,
        baseline_sd=None,
        baseline_n=trials,
        h=float(detector.h),
        scale=detector.scale,
        baselined_ns=now_ns,
    )


def _continuous_state(monitor: Monitor, values: Sequence[float], now_ns: int) -> MonitorState:
    mean = math.fsum(values) / len(values)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / max(1, len(values) - 1))
    floor = 1e-9 * max(1.0, abs(mean))  # a flat baseline: any change is one
    return replace(
        monitor.state,
        baseline=mean,
        baseline_sd=max(sd, floor),
        baseline_n=len(values),
        h=gaussian_threshold(monitor.shift / 2, monitor.arl0),
        scale=None,
        baselined_ns=now_ns,
    )


def needs_baseline(monitor: Monitor, now_ns: int, alert_open: bool) -> bool:
    """True when the monitor has no baseline yet, or its baseline is a day old and no alert is open."""
    state = monitor.state
    return state.baseline is None or (not alert_open and now_ns - state.baselined_ns >= REBASELINE_NS)


def _rate_detector(monitor: Monitor) -> BernoulliCusum:
    state = monitor.state
    assert state.baseline is not None and state.h is not None and state.scale is not None
    n = state.baseline_n or 0
    p0 = min(0.995, max(0.005, designed_rate(state.baseline * n, n) if n else state.baseline))
    shift = -monitor.shift if monitor.metric.watches_drop else monitor.shift
    return BernoulliCusum(p0, min(0.999, max(0.001, p0 + shift)), int(state.h), state.scale)


def _gaussian_detector(monitor: Monitor) -> GaussianCusum:
    state = monitor.state
    assert state.baseline is not None and state.baseline_sd is not None and state.h is not None
    sign = -1 if monitor.metric.watches_drop else 1
    return GaussianCusum(state.baseline, state.baseline_sd, monitor.shift / 2, state.h, sign)


def _describe(monitor: Monitor, observed: float, samples: int) -> str:
    f = monitor.filters
    where = ", ".join(
        f"{name} {value}"
        for name, value in (
            ("model", f.model),
            ("route", f.route),
            ("prompt", f.prompt_name),
            ("version", f.prompt_version),
        )
        if value is not None
    )
    series = LABELS[monitor.metric] + (f" of {monitor.score_name}" if monitor.score_name else "")
    direction = "fell" if monitor.metric.watches_drop else "rose"
    baseline = monitor.state.baseline or 0.0
    unit = "scores" if monitor.metric.reads_scores else ("calls" if monitor.metric.is_rate else "minutes")
    return (
        f"Monitor '{monitor.name}': {series} {direction} to {observed:.4g} over the last {samples} {unit}, "
        f"against a baseline of {baseline:.4g}" + (f" ({where})" if where else "")
    )


class _Run:
    """The running statistic and the segment since it was last zero, while samples are fed."""

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self.state = replace(monitor.state)
        self.alarms: list[Alarm] = []

    def after(self, statistic: float, samples: int, events: float, at_ns: int, alarmed: bool) -> None:
        state = self.state
        if statistic <= 0:
            state.run_samples, state.run_events = 0, 0.0
        else:
            state.run_samples += samples
            state.run_events += events
        state.statistic = statistic
        if alarmed:
            n = max(1, state.run_samples)
            observed = state.run_events / n
            self.alarms.append(
                Alarm(
                    at_ns, observed, state.baseline or 0.0, n, statistic, _describe(self.monitor, observed, n)
                )
            )
            state.statistic, state.run_samples, state.run_events = 0.0, 0, 0.0


def feed_scores(monitor: Monitor, samples: Sequence[ScoreSample]) -> tuple[MonitorState, list[Alarm]]:
    """Feed scores (in time order) to a baselined monitor: its new state (cursor at the last one) and
    the alarms."""
    run = _Run(monitor)
    if monitor.metric is MonitorMetric.SCORE_PASS_RATE:
        rate = _rate_detector(monitor)
        threshold = monitor.threshold if monitor.threshold is not None else 0.5
        for s in samples:
            passed = s.value >= threshold
            statistic = rate.step(run.state.statistic, passed)
            run.after(statistic, 1, float(passed), s.created_ns, rate.alarms(statistic))
    else:
        gauss = _gaussian_detector(monitor)
        for s in samples:
            statistic = gauss.step(run.state.statistic, s.value)
            run.after(statistic, 1, s.value, s.created_ns, statistic > gauss.h)
    if samples:
        run.state.cursor_ns, run.state.cursor_id = samples[-1].created_ns, samples[-1].id
    return run.state, run.alarms


def feed_minutes(
    monitor: Monitor, minutes: Sequence[MinuteSample], read_until_s: int
) -> tuple[MonitorState, list[Alarm]]:
    """Feed complete minutes (in time order) to a baselined monitor: its new state (cursor at
    ``read_until_s``, the first minute not read) and the alarms."""
    run = _Run(monitor)
    if monitor.metric is MonitorMetric.ERROR_RATE:
        rate = _rate_detector(monitor)
        for m in minutes:
            statistic = rate.update(run.state.statistic, m.errors, m.count)
            run.after(statistic, m.count, m.errors, (m.bucket + 60) * 10**9, rate.alarms(statistic))
    else:
        gauss, value = _gaussian_detector(monitor), MINUTE_VALUES[monitor.metric]
        for m in minutes:
            if (v := value(m)) is not None:
                statistic = gauss.step(run.state.statistic, v)
                run.after(statistic, 1, v, (m.bucket + 60) * 10**9, statistic > gauss.h)
    run.state.cursor_ns = read_until_s * 10**9
    return run.state, run.alarms
