"""An in-memory span exporter, for tests of code instrumented with the Pilothouse SDK."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult


class InMemoryExporter(SpanExporter):
    """Keeps every exported span: ``pilothouse.init(exporter=InMemoryExporter())``."""

    def __init__(self) -> None:
        self._spans: list[ReadableSpan] = []
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            self._spans.extend(spans)
        return SpanExportResult.SUCCESS

    @property
    def spans(self) -> list[ReadableSpan]:
        """Spans exported so far, in export order."""
        with self._lock:
            return list(self._spans)

    def clear(self) -> None:
        """Forget the spans exported so far."""
        with self._lock:
            self._spans.clear()
