"""How ``/metrics`` adds up the processes of one server (server/metrics_shared.py)."""

from __future__ import annotations

import time

from pilothouse.server.metrics import GatewayMetrics, Gauge
from pilothouse.server.metrics_shared import SharedMetrics, render_merged, snapshot


def _process(calls: int, circuit: float, pending: float) -> GatewayMetrics:
    metrics = GatewayMetrics()
    for _ in range(calls):
        metrics.requests.inc("m", "d", "200")
        metrics.latency.observe(0.02, "m", "d")
    metrics.gauges = [
        Gauge(
            "pilothouse_deployment_circuit_state",
            "c",
            ("model", "deployment"),
            lambda: [(("m", "d"), circuit)],
        ),
        Gauge("pilothouse_ingest_pending_spans", "p", (), lambda: [((), pending)]),
    ]
    return metrics


def test_counters_and_histograms_add_up_gauges_of_live_processes_only_and_the_worst_circuit() -> None:
    here, there, gone = _process(3, 0.0, 5.0), _process(4, 2.0, 7.0), _process(10, 0.0, 100.0)
    dead = snapshot(gone)
    dead["t"] = time.time() - 3600  # a process that stopped publishing an hour ago
    text = render_merged(here, [snapshot(here), snapshot(there), dead], stale_s=10)
    assert 'pilothouse_gateway_requests_total{model="m",deployment="d",status="200"} 17' in text
    assert 'pilothouse_gateway_request_duration_seconds_count{model="m",deployment="d"} 17' in text
    assert (
        'pilothouse_gateway_request_duration_seconds_bucket{model="m",deployment="d",le="0.025"} 17' in text
    )
    assert 'pilothouse_deployment_circuit_state{model="m",deployment="d"} 2' in text  # open in one
    assert "pilothouse_ingest_pending_spans 12" in text  # the dead process holds no queue


def test_a_process_reusing_a_dead_ones_pid_does_not_overwrite_its_counters() -> None:
    # each process's counters are one field of the server's hash; a restarted worker often gets the pid
    # of a dead one (containers): were the field the pid, the dead one's counts would vanish from the sum
    metrics = GatewayMetrics()
    first = SharedMetrics(metrics, "redis://127.0.0.1:6379/0", "test")
    again = SharedMetrics(metrics, "redis://127.0.0.1:6379/0", "test")
    assert first.field != again.field
