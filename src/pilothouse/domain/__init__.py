"""Pure domain types and math of Pilothouse: traces, observations, usage, cost, scores."""

from pilothouse.domain.traces import (
    Cost,
    Observation,
    ObservationKind,
    Project,
    Score,
    ScoreDataType,
    ScoreSource,
    SpanRecord,
    Status,
    Trace,
    TraceAttributes,
    Usage,
)

__all__ = [
    "Cost",
    "Observation",
    "ObservationKind",
    "Project",
    "Score",
    "ScoreDataType",
    "ScoreSource",
    "SpanRecord",
    "Status",
    "Trace",
    "TraceAttributes",
    "Usage",
]
