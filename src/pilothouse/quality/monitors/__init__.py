"""Monitors and alerts: change detection on a project's series (score pass rates and means, error rate,
latency p95, cost and tokens per request) against a trailing baseline, evaluated by a background job,
with alerts to the log and webhooks, silences and acknowledgements (docs/monitors.md)."""

from pilothouse.quality.monitors._service import MonitorError, Monitors, alert_json, monitor_json
from pilothouse.quality.monitors._statistics import (
    BernoulliCusum,
    GaussianCusum,
    bernoulli_arl,
    design_bernoulli,
    gaussian_arl,
    gaussian_threshold,
)
from pilothouse.quality.monitors._worker import MonitorWorker, alert_payload

__all__ = [
    "BernoulliCusum",
    "GaussianCusum",
    "MonitorError",
    "MonitorWorker",
    "Monitors",
    "alert_json",
    "alert_payload",
    "bernoulli_arl",
    "design_bernoulli",
    "gaussian_arl",
    "gaussian_threshold",
    "monitor_json",
]
