"""SDK benchmark: caller-thread overhead per span of ``@observe`` and ``pilothouse.span``.

    python benchmarks/sdk_overhead.py [--spans 20000]

Spans are exported by the SDK's background batch processor to a real collector process on loopback;
the figure is the time the *caller's* thread spends per traced call, net of the plain function call.
Baseline, measured in the same run: a bare OpenTelemetry SDK span (``tracer.start_as_current_span``)
with the same batch processor.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

sys.path.insert(0, str(Path(__file__).parent))
from _common import Server, create_key

import pilothouse


def per_call_us(fn: object, n: int, rounds: int = 5) -> float:
    """Median over rounds of the mean wall time per call, in microseconds."""
    call = fn  # type: ignore[assignment]
    results = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(n):
            call(i)  # type: ignore[operator]
        results.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=20_000, help="calls per round (5 rounds)")
    args = parser.parse_args()
    url = f"sqlite:///{tempfile.mkdtemp(prefix='ph-bench-sdk-')}/sdk.db"
    key = create_key(url)
    server = Server(url)
    try:
        pilothouse.init(base_url=server.base_url, api_key=key, service_name="bench")

        def plain(i: int) -> int:
            return i + 1

        @pilothouse.observe
        def observed(i: int) -> int:
            return i + 1

        def with_span(i: int) -> int:
            with pilothouse.span("block"):
                return i + 1

        provider = TracerProvider()
        exporter = OTLPSpanExporter(
            endpoint=server.base_url + "/v1/traces", headers={"Authorization": f"Bearer {key}"}
        )
        provider.add_span_processor(
            # the SDK's queue size too: with OTel's default (2,048) a burst of spans is dropped
            BatchSpanProcessor(
                exporter, max_queue_size=100_000, schedule_delay_millis=500, max_export_batch_size=512
            )
        )
        tracer = provider.get_tracer("bench")

        def bare_otel(i: int) -> int:
            with tracer.start_as_current_span("bare"):
                return i + 1

        n = args.spans
        base = per_call_us(plain, n)
        results = {
            "bare OpenTelemetry span": per_call_us(bare_otel, n) - base,
            "@pilothouse.observe": per_call_us(observed, n) - base,
            "with pilothouse.span()": per_call_us(with_span, n) - base,
        }
        provider.shutdown()
        pilothouse.flush()
        stored = 0
        with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {key}"}) as http:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                health = http.get("/health").json()
                if health["ingest_pending"] == 0:
                    break
                time.sleep(0.1)
            stored = len(http.get("/api/traces", params={"limit": "10"}).json()["data"])
    finally:
        pilothouse.shutdown()
        server.stop()
    print(f"{'caller-thread overhead per span':34} {'us':>8} {'vs bare OTel':>13}")
    bare = results["bare OpenTelemetry span"]
    for label, us in results.items():
        print(f"{label:34} {us:8.1f} {us / bare:12.2f}x")
    print(f"(exported in the background to {server.base_url}; traces visible through the API: {stored > 0})")


if __name__ == "__main__":
    main()
