"""Pure domain types and math of Pilothouse: traces, observations, usage, cost, money, scores."""

from pilothouse.domain.money import Money
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
    "Money",
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
