"""A monitor's step (pure): a baseline needs enough samples, steady samples move the cursor without an
alarm, a drop alarms with the value since the estimated change, and a new baseline keeps the
statistic's size in nats."""

from __future__ import annotations

from dataclasses import replace

import numpy  # noqa: F401  (imported at collection, as the detector's design does on first use)
import pytest

from pilothouse.domain.monitors import Monitor, MonitorFilters, MonitorMetric
from pilothouse.quality.monitors._evaluation import (
    MIN_BASELINE_SAMPLES,
    REBASELINE_NS,
    baseline_from_scores,
    feed_scores,
    needs_baseline,
)
from pilothouse.store.monitors import ScoreSample

MONITOR = Monitor(
    id="m1",
    project_id="p1",
    name="correctness",
    metric=MonitorMetric.SCORE_PASS_RATE,
    filters=MonitorFilters(model="gpt-4o"),
    score_name="correct",
    threshold=0.5,
    shift=0.1,
    arl0=500.0,
    baseline_s=86400,
    webhook_url=None,
    created_ns=0,
)


def _samples(passes: list[bool], start: int = 0) -> list[ScoreSample]:
    return [ScoreSample(start + i, f"s{start + i:06d}", 1.0 if ok else 0.0) for i, ok in enumerate(passes)]


def test_a_drop_alarms_and_a_steady_rate_does_not() -> None:
    assert baseline_from_scores(MONITOR, [1.0] * (MIN_BASELINE_SAMPLES - 1), 0) is None
    state = baseline_from_scores(MONITOR, [0.0 if i % 10 == 0 else 1.0 for i in range(1000)], 5)
    assert state is not None and state.baseline == pytest.approx(0.9) and state.h and state.baselined_ns == 5
    monitor = replace(MONITOR, state=state)
    assert not needs_baseline(monitor, REBASELINE_NS, alert_open=False)
    assert needs_baseline(monitor, REBASELINE_NS + 5, alert_open=False)
    assert not needs_baseline(monitor, REBASELINE_NS + 5, alert_open=True)  # never learns a fault

    steady, alarms = feed_scores(monitor, _samples([i % 10 != 0 for i in range(300)]))
    assert alarms == [] and (steady.cursor_ns, steady.cursor_id) == (299, "s000299")
    dropped, alarms = feed_scores(
        replace(monitor, state=steady), _samples([i % 2 == 0 for i in range(300)], 300)
    )
    assert alarms, "a 40-point drop went unseen for 300 samples"
    first = alarms[0]
    assert first.observed < 0.7 and first.baseline == pytest.approx(0.9) and first.at_ns >= 300
    assert "pass rate of correct fell" in first.message and "(model gpt-4o)" in first.message
    assert dropped.statistic < state.h  # it starts again after each alarm


def test_a_new_baseline_keeps_the_statistic_in_nats() -> None:
    state = baseline_from_scores(MONITOR, [0.0 if i % 10 == 0 else 1.0 for i in range(1000)], 0)
    assert state is not None and state.scale
    monitor = replace(MONITOR, state=replace(state, statistic=100.0))
    again = baseline_from_scores(monitor, [0.0 if i % 5 == 0 else 1.0 for i in range(1000)], 1)  # now 80%
    assert again is not None and again.scale and again.scale != state.scale
    assert again.statistic / again.scale == pytest.approx(100.0 / state.scale)


def test_a_perfect_small_baseline_is_not_read_as_certainty() -> None:
    """100 passes out of 100 is designed as a 99.0% rate (Laplace's rule), not as 99.5% (the cap):
    two failures in a row no longer alarm; a real drop still does. The reported baseline stays 1.0."""
    default = replace(MONITOR, arl0=8000.0)
    state = baseline_from_scores(default, [1.0] * MIN_BASELINE_SAMPLES, 0)
    assert state is not None and state.baseline == 1.0
    monitor = replace(default, state=state)
    two, alarms = feed_scores(monitor, _samples([False, False] + [True] * 20))
    assert alarms == [] and two.statistic > 0
    _, alarms = feed_scores(monitor, _samples([i % 3 != 0 for i in range(300)]))
    assert alarms and alarms[0].baseline == 1.0
