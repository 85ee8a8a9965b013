"""``/metrics`` of the whole server when ``serve --workers N`` runs several processes on one port.

A scrape through the shared port reaches one worker, chosen by the kernel. So each worker publishes
its series to Redis every ``publish_s`` (a hash per server start, one field per process: its
counters, histograms and gauges as JSON), and the worker that is scraped renders the sum of every
process's latest figures, its own read fresh. Counters of a process that died stay in the sum (a
counter never goes down; its replacement starts from zero under its own process id); gauges count
only from processes that published in the last ``stale_s`` (a dead process has no queue, no calls in
flight). The circuit-state gauge is the worst state of any process (they agree once the breakers are
shared), the other gauges add up.

The scrape reads Redis (one ``HGETALL``, in a thread); requests never do. Without Redis, or while it
is unreachable, the scrape renders this process alone.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import secrets
import threading
import time
from typing import Any

from pilothouse.server.metrics import Counter, GatewayMetrics, Gauge, Histogram

log = logging.getLogger("pilothouse.metrics")
KEY = "pilothouse:metrics:{instance}"
MAX_GAUGES = {"pilothouse_deployment_circuit_state"}  # the worst of the processes, not their sum

Series = list[list[Any]]  # [[label values, value or bucket row], ...]


def snapshot(metrics: GatewayMetrics) -> dict[str, Any]:
    """This process's series, JSON-ready."""
    counters: dict[str, Series] = {}
    histograms: dict[str, Series] = {}
    gauges: dict[str, Series] = {}
    for metric in metrics.all():
        if isinstance(metric, Counter):
            counters[metric.name] = [[list(k), v] for k, v in metric.copy_values().items()]
        elif isinstance(metric, Histogram):
            histograms[metric.name] = [[list(k), row] for k, row in metric.copy_values().items()]
        else:
            gauges[metric.name] = [[list(k), v] for k, v in metric.read()]
    return {"t": time.time(), "counters": counters, "histograms": histograms, "gauges": gauges}


def render_merged(metrics: GatewayMetrics, snapshots: list[dict[str, Any]], stale_s: float) -> str:
    """The exposition of ``metrics``' series summed over ``snapshots`` (this process's among them)."""
    now = time.time()
    fresh = [s for s in snapshots if now - float(s.get("t", 0)) <= stale_s]
    lines: list[str] = []
    for metric in metrics.all():
        merged: Counter | Histogram | Gauge
        if isinstance(metric, Counter):
            merged = Counter(metric.name, metric.help, metric.labels)
            for snap in snapshots:
                for labels, value in snap["counters"].get(metric.name, []):
                    key = tuple(labels)
                    merged.values[key] = merged.values.get(key, 0.0) + float(value)
        elif isinstance(metric, Histogram):
            merged = Histogram(metric.name, metric.help, metric.labels, metric.buckets)
            for snap in snapshots:
                for labels, row in snap["histograms"].get(metric.name, []):
                    key = tuple(labels)
                    total = merged.values.setdefault(key, [0.0] * len(row))
                    if len(total) == len(row):  # the same buckets (the same code): else left out
                        for i, count in enumerate(row):
                            total[i] += float(count)
        else:
            values: dict[tuple[str, ...], float] = {}
            worst = metric.name in MAX_GAUGES
            for snap in fresh:
                for labels, value in snap["gauges"].get(metric.name, []):
                    key = tuple(labels)
                    known = values.get(key)
                    if known is None:
                        values[key] = float(value)
                    else:
                        values[key] = max(known, float(value)) if worst else known + float(value)
            merged = Gauge(metric.name, metric.help, metric.labels, functools.partial(sorted, values.items()))
        lines.extend(merged.render())
    return "\n".join(lines) + "\n"


class SharedMetrics:
    """Publishes this process's series and renders the whole server's (``start``/``render``/``stop``)."""

    def __init__(
        self, metrics: GatewayMetrics, redis_url: str, instance: str, *, publish_s: float = 1.0
    ) -> None:
        self.metrics = metrics
        self.redis_url = redis_url
        self.key = KEY.format(instance=instance)
        self.publish_s = publish_s
        self.stale_s = max(10.0, 5 * publish_s)
        self.field = f"{os.getpid()}-{secrets.token_hex(4)}"  # a restarted worker may reuse a dead one's pid
        self._client: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pilothouse-shared-metrics", daemon=True)

    def _redis(self) -> Any:
        if self._client is None:
            import redis

            self._client = redis.Redis.from_url(self.redis_url, socket_timeout=2, socket_connect_timeout=2)
        return self._client

    def start(self) -> None:
        """Publish every ``publish_s`` from now on."""
        self._thread.start()

    def _publish(self) -> None:
        pipe = self._redis().pipeline(transaction=False)
        pipe.hset(self.key, self.field, json.dumps(snapshot(self.metrics)))
        pipe.expire(self.key, 7 * 86_400)  # a server stopped for a week leaves nothing behind
        pipe.execute()

    def _run(self) -> None:
        import redis

        failing = False  # said once when Redis goes away
        while not self._stop.wait(self.publish_s):
            try:
                self._publish()
                failing = False
            except (redis.RedisError, OSError) as exc:
                if not failing:
                    log.warning("could not publish this process's metrics to Redis: %s", exc)
                    failing = True

    def render(self) -> str:
        """The whole server's exposition (in a thread: it reads Redis)."""
        import redis

        own = snapshot(self.metrics)
        try:
            stored = self._redis().hgetall(self.key)
        except (redis.RedisError, OSError) as exc:
            log.warning("could not read the other processes' metrics from Redis: %s", exc)
            return self.metrics.render()
        snapshots = [own]
        for field, raw in stored.items():
            if field.decode() != self.field:
                try:
                    snapshots.append(json.loads(raw))
                except ValueError:
                    continue
        return render_merged(self.metrics, snapshots, self.stale_s)

    def stop(self) -> None:
        """Publish a last time (this process's final counts stay in the sum) and stop."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        try:
            self._publish()
        except Exception as exc:
            log.warning("could not publish this process's last metrics: %s", exc)
        if self._client is not None:
            self._client.close()
