"""Tracing: the client SDK (built on OpenTelemetry) and OTLP decoding + convention mapping."""
