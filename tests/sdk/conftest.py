"""SDK fixtures: an in-memory exporter behind pilothouse.init(), a simulated upstream, and a helper
that runs exported spans through the collector's decode + normalise path."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

import pilothouse
from pilothouse.domain.traces import Observation
from pilothouse.providers.simulated_model import SimConfig
from pilothouse.testing import InMemoryExporter, SimulatedUpstream
from pilothouse.tracing.conventions import normalise_span
from pilothouse.tracing.otlp import decode_protobuf


@pytest.fixture
def exporter() -> Iterator[InMemoryExporter]:
    exp = InMemoryExporter()
    pilothouse.init(span_processor=SimpleSpanProcessor(exp), set_global=False)
    yield exp
    pilothouse.shutdown()


@pytest.fixture(scope="session")
def upstream() -> Iterator[SimulatedUpstream]:
    with SimulatedUpstream(SimConfig(cached_fraction=0.5, reasoning_tokens=3)) as up:
        yield up


def observations(exp: InMemoryExporter) -> list[Observation]:
    """What the collector would store for the exported spans (through the real OTLP encoding)."""
    body = encode_spans(exp.spans).SerializeToString()
    return [normalise_span(raw, "p").observation for raw in decode_protobuf(body)]
