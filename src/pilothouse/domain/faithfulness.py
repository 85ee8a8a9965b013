"""Faithfulness verdicts: whether a response is supported by its context, as a value any part of
Pilothouse can pass around (the hallucination detector makes them; guardrails, online evaluators and
review read them)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

SUPPORTED = "supported"
UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class UnsupportedSpan:
    """A stretch of the response the context does not support: ``response[start:end]``."""

    start: int
    end: int
    text: str
    reason: str = ""  # why it was flagged, e.g. "number absent from the context", "low support"
    score: float = 0.0  # how unsupported, 0..1 (higher: more clearly unsupported)

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < self.start:
            raise ValueError(f"bad span offsets [{self.start}, {self.end})")

    def to_dict(self) -> dict[str, Any]:
        """The span as plain JSON-ready data."""
        return {
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "reason": self.reason,
            "score": self.score,
        }


@dataclass(frozen=True)
class Verdict:
    """A detector's judgement of one response against its context.

    ``score`` is the probability-like support in [0, 1] (1: fully supported); ``label`` is ``supported``
    or ``unsupported`` (score against the detector's threshold); ``spans`` are the unsupported parts of
    the response (character offsets into it); ``source`` names who decided (``local``, ``judge``,
    ``hf:<folder>``); ``features`` holds the detector's raw evidence for debugging and calibration."""

    score: float
    label: str
    spans: tuple[UnsupportedSpan, ...] = ()
    source: str = "local"
    confidence: float = 1.0  # how sure the deciding detector is, 0..1 (|score - threshold| scaled)
    features: dict[str, float] = field(default_factory=dict)
    reason: str = ""

    def __post_init__(self) -> None:
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"a faithfulness score lies in [0, 1], not {self.score}")
        if self.label not in (SUPPORTED, UNSUPPORTED):
            raise ValueError(f"label must be '{SUPPORTED}' or '{UNSUPPORTED}', not {self.label!r}")

    @property
    def supported(self) -> bool:
        """True when the label is ``supported``."""
        return self.label == SUPPORTED

    def to_dict(self) -> dict[str, Any]:
        """The verdict as plain JSON-ready data."""
        return {
            "score": self.score,
            "label": self.label,
            "spans": [s.to_dict() for s in self.spans],
            "source": self.source,
            "confidence": self.confidence,
            "features": dict(self.features),
            "reason": self.reason,
        }


def split_at_spans(text: str, spans: Iterable[tuple[int, int]]) -> list[tuple[str, bool]]:
    """``text`` cut at the (start, end) spans, sorted by start: (piece, inside a span) in order, the
    pieces joining back into ``text``. Overlaps are merged; offsets past the end are clipped."""
    parts: list[tuple[str, bool]] = []
    at = 0
    for start, end in sorted(spans):
        start, end = max(start, at), min(end, len(text))
        if start >= end:
            continue
        if start > at:
            parts.append((text[at:start], False))
        parts.append((text[start:end], True))
        at = end
    if at < len(text):
        parts.append((text[at:], False))
    return parts


def spans_in(details: Any) -> list[tuple[int, int]]:
    """The (start, end) offsets of the unsupported spans a scorer's details hold (``details["spans"]``:
    objects with whole-number ``start`` and ``end``, as :meth:`UnsupportedSpan.to_dict` writes them),
    sorted; entries of another shape are left out."""
    found = details.get("spans") if isinstance(details, dict) else None
    if not isinstance(found, list):
        return []
    out = []
    for span in found:
        if isinstance(span, dict):
            start, end = span.get("start"), span.get("end")
            if type(start) is int and type(end) is int and 0 <= start < end:
                out.append((start, end))
    return sorted(out)
