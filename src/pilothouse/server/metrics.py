"""Prometheus metrics (text exposition format 0.0.4), kept in-process: counters and histograms
with labels, plus gauges read at scrape time (ingest queue, circuit states)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Sequence

from pilothouse.domain.traces import SpanRecord, Status

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


def _labels(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for v in values)
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, escaped, strict=True)) + "}"


class Counter:
    """A monotonically increasing count per label set."""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()) -> None:
        self.name, self.help, self.labels = name, help_text, tuple(labels)
        self.values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        with self._lock:
            self.values[labels] = self.values.get(labels, 0.0) + amount

    def copy_values(self) -> dict[tuple[str, ...], float]:
        """The counts now (another thread may be counting)."""
        with self._lock:
            return dict(self.values)

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} counter"
        for labels, value in sorted(self.values.items()):
            yield f"{self.name}{_labels(self.labels, labels)} {value:g}"


class Histogram:
    """Observations counted into cumulative buckets, with their sum and count."""

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = LATENCY_BUCKETS_S,
    ):
        self.name, self.help, self.labels, self.buckets = name, help_text, tuple(labels), tuple(buckets)
        self.values: dict[tuple[str, ...], list[float]] = {}  # bucket counts..., +Inf count, sum
        self._lock = threading.Lock()

    def observe(self, value: float, *labels: str) -> None:
        with self._lock:
            row = self.values.get(labels)
            if row is None:
                row = self.values[labels] = [0.0] * (len(self.buckets) + 2)
            for i, bound in enumerate(self.buckets):
                if value <= bound:
                    row[i] += 1
            row[-2] += 1
            row[-1] += value

    def copy_values(self) -> dict[tuple[str, ...], list[float]]:
        """The bucket counts, count and sum now (another thread may be observing)."""
        with self._lock:
            return {labels: list(row) for labels, row in self.values.items()}

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} histogram"
        for labels, row in sorted(self.values.items()):
            names = (*self.labels, "le")
            for bound, count in zip(self.buckets, row, strict=False):
                yield f"{self.name}_bucket{_labels(names, (*labels, f'{bound:g}'))} {count:g}"
            yield f"{self.name}_bucket{_labels(names, (*labels, '+Inf'))} {row[-2]:g}"
            yield f"{self.name}_sum{_labels(self.labels, labels)} {row[-1]:g}"
            yield f"{self.name}_count{_labels(self.labels, labels)} {row[-2]:g}"


class Gauge:
    """Values read when scraped: ``read()`` returns (label values, value) pairs."""

    def __init__(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str],
        read: Callable[[], Iterable[tuple[tuple[str, ...], float]]],
    ):
        self.name, self.help, self.labels, self.read = name, help_text, tuple(labels), read

    def render(self) -> Iterable[str]:
        yield f"# HELP {self.name} {self.help}"
        yield f"# TYPE {self.name} gauge"
        for labels, value in self.read():
            if not math.isnan(value):
                yield f"{self.name}{_labels(self.labels, labels)} {value:g}"


UNKNOWN = "unknown"  # the label of a model or deployment the config does not name


class GatewayMetrics:
    """The gateway's series, per model and deployment. Label values come from the configured names
    only (``unknown`` otherwise): each model name a client sends would otherwise be a new series on
    the unauthenticated ``/metrics``, without bound."""

    def __init__(self, models: Iterable[str] | None = None, deployments: Iterable[str] | None = None) -> None:
        self.models = frozenset(models) if models is not None else None  # None: any (tests)
        self.deployments = frozenset(deployments) if deployments is not None else None
        labels = ("model", "deployment")
        self.requests = Counter(
            "pilothouse_gateway_requests_total", "Gateway requests by outcome.", (*labels, "status")
        )
        self.errors = Counter(
            "pilothouse_gateway_errors_total", "Gateway requests that failed.", (*labels, "status")
        )
        self.latency = Histogram(
            "pilothouse_gateway_request_duration_seconds", "Gateway request latency.", labels
        )
        self.ttft = Histogram(
            "pilothouse_gateway_time_to_first_token_seconds", "Time to first token of streams.", labels
        )
        self.tokens = Counter(
            "pilothouse_gateway_tokens_total", "Tokens through the gateway.", (*labels, "type")
        )
        self.attempts = Counter(
            "pilothouse_gateway_attempts_total", "Upstream attempts by status.", (*labels, "status")
        )
        self.guardrails = Counter(
            "pilothouse_gateway_guardrail_checks_total",
            "Guardrail outcomes per call: passed or failed, by guard (a configured name), stage and action.",
            ("model", "guard", "stage", "action", "outcome"),
        )
        self.gauges: list[Gauge] = []

    def observe_call(self, record: SpanRecord) -> None:
        """Count one recorded gateway call."""
        o = record.observation
        model = self._model(o.request_model or "")
        deployment = self._deployment(o.attributes.get("gateway.deployment", ""))
        status = str(o.attributes.get("gateway.http_status", ""))
        if not (len(status) == 3 and status.isdigit()):
            status = UNKNOWN if status else ""
        self.requests.inc(model, deployment, status)
        if o.status is Status.ERROR:
            self.errors.inc(model, deployment, status)
        self.latency.observe(o.duration_ns / 1e9, model, deployment)
        if o.ttft_ns is not None:
            self.ttft.observe(o.ttft_ns / 1e9, model, deployment)
        if o.usage.input_total:
            self.tokens.inc(model, deployment, "input", amount=o.usage.input_total)
        if o.usage.output:
            self.tokens.inc(model, deployment, "output", amount=o.usage.output)
        for attempt in o.attributes.get("gateway.attempts", []):
            attempt_status = str(attempt["status"])
            if len(attempt_status) > 16:
                attempt_status = UNKNOWN
            self.attempts.inc(model, self._deployment(attempt["deployment"]), attempt_status)
        for outcome in o.attributes.get("gateway.guardrails", []):  # names from the config: bounded
            self.guardrails.inc(
                model,
                str(outcome["guard"]),
                str(outcome["stage"]),
                str(outcome["action"]),
                "passed" if outcome["passed"] else "failed",
            )

    def _model(self, name: str) -> str:
        if not name or self.models is None or name in self.models:
            return name
        return UNKNOWN

    def _deployment(self, name: object) -> str:
        text = str(name)
        if not text or self.deployments is None or text in self.deployments:
            return text
        return UNKNOWN

    def all(self) -> list[Counter | Histogram | Gauge]:
        return [
            self.requests,
            self.errors,
            self.latency,
            self.ttft,
            self.tokens,
            self.attempts,
            self.guardrails,
            *self.gauges,
        ]

    def render(self) -> str:
        """The whole exposition."""
        lines: list[str] = []
        for metric in self.all():
            lines.extend(metric.render())
        return "\n".join(lines) + "\n"
