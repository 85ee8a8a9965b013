"""Monitors and their alerts, as values: what a monitor watches (a series of a project, filtered), the
detector's running state, and the alerts it raised. The statistics live in
:mod:`pilothouse.quality.monitors`; the rows in :mod:`pilothouse.store.monitors`."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class MonitorMetric(StrEnum):
    """The series a monitor watches. Score metrics read the ``scores`` of traces (one sample per
    score); the others read the per-minute rollups of model calls (one sample per minute, or per call
    for the error rate)."""

    SCORE_PASS_RATE = "score_pass_rate"  # share of a score's values at or above its threshold
    SCORE_MEAN = "score_mean"  # a score's values, standardised
    ERROR_RATE = "error_rate"  # share of model calls that failed
    LATENCY_P95 = "latency_p95"  # per minute, ms
    COST_PER_REQUEST = "cost_per_request"  # per minute, USD
    TOKENS_PER_REQUEST = "tokens_per_request"  # per minute, input + output

    @property
    def reads_scores(self) -> bool:
        """True for the metrics computed from scores (they need ``score_name``)."""
        return self in (MonitorMetric.SCORE_PASS_RATE, MonitorMetric.SCORE_MEAN)

    @property
    def is_rate(self) -> bool:
        """True for the metrics watched by a Bernoulli CUSUM (each sample passes or not)."""
        return self in (MonitorMetric.SCORE_PASS_RATE, MonitorMetric.ERROR_RATE)

    @property
    def watches_drop(self) -> bool:
        """True when a fall is bad (pass rates and score means), False when a rise is."""
        return self.reads_scores


@dataclass(frozen=True, slots=True)
class MonitorFilters:
    """Which samples count: model calls (or the traces of scores) of this ``model``, span ``route``
    (the rollups' name: a gateway route or an operation), and prompt; None matches everything. The
    prompt filters apply to score monitors (rollups are not kept per prompt version)."""

    model: str | None = None
    route: str | None = None
    prompt_name: str | None = None
    prompt_version: str | None = None


@dataclass(slots=True)
class MonitorState:
    """Where a monitor's detector stands: its baseline (rate, or mean and standard deviation, and how
    many samples it rests on), the detector's design (``h`` and ``scale`` for a rate), the statistic,
    the read cursor (the last sample's time and id, or the last minute read), the samples seen since the
    run began, and when the baseline was last computed."""

    baseline: float | None = None
    baseline_sd: float | None = None
    baseline_n: int = 0
    h: float | None = None
    scale: float | None = None
    statistic: float = 0.0
    cursor_ns: int = 0
    cursor_id: str = ""
    run_samples: int = 0
    run_events: float = 0.0  # passes (or errors, or the sum of values) since the run began
    baselined_ns: int = 0


@dataclass(frozen=True, slots=True)
class Monitor:
    """A monitor: the series (``metric``, ``score_name`` and ``threshold`` for scores, ``filters``),
    the change to detect (``shift``: in rate points for rates, in standard deviations otherwise), the
    false-alarm budget (``arl0``: samples between false alarms), the trailing baseline's length, where
    alerts go, and whether it is silenced (until ``silenced_until_ns``)."""

    id: str
    project_id: str
    name: str
    metric: MonitorMetric
    filters: MonitorFilters
    score_name: str | None
    threshold: float | None
    shift: float
    arl0: float
    baseline_s: int
    webhook_url: str | None
    created_ns: int
    silenced_until_ns: int | None = None
    state: MonitorState = field(default_factory=MonitorState)

    def silenced(self, now_ns: int) -> bool:
        """True while alerts are kept quiet (stored, not sent)."""
        return self.silenced_until_ns is not None and self.silenced_until_ns > now_ns


class AlertStatus(StrEnum):
    """An alert is open until someone acknowledges it."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"


@dataclass(frozen=True, slots=True)
class MonitorAlert:
    """One alarm of a monitor: the run's observed value against its baseline, the statistic, a
    human sentence, whether it was silenced (stored, not sent) and its acknowledgement."""

    id: str
    monitor_id: str
    project_id: str
    fired_ns: int
    metric: MonitorMetric
    observed: float
    baseline: float
    samples: int
    statistic: float
    message: str
    silenced: bool
    status: AlertStatus = AlertStatus.OPEN
    acknowledged_ns: int | None = None
    acknowledged_by: str | None = None
    delivery: str | None = None  # the webhook's outcome: "sent", "no webhook", or why it failed
