"""A scorer's details as an eval run stores them (bounded JSON, secrets redacted, any value kept as
text), the unsupported spans read back out of them, and what the CLI and the item page make of them."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from decimal import Decimal

import orjson

from pilothouse.domain.evals import EvalResult, ScoreRecord
from pilothouse.domain.faithfulness import UnsupportedSpan, spans_in, split_at_spans
from pilothouse.domain.score_details import (
    DETAILS_LIMIT,
    MAX_DEPTH,
    TRUNCATED_KEY,
    SpanTally,
    details_from_json,
    details_json,
    tally_spans,
)
from pilothouse.ui.pages_eval_item import result_view, score_view

RESPONSE = "Paris is the capital. It has 90 million people. The Seine flows through it."
SPAN = UnsupportedSpan(22, 48, RESPONSE[22:48], "number absent from the context", 0.93)
HALLUCINATION = {  # what the hallucination scorer's details look like, escalated to its judge
    "label": "unsupported",
    "spans": [SPAN.to_dict()],
    "source": "judge",
    "features": {"min_support": 0.12},
    "judge_called": True,
}


class Colour(enum.Enum):
    RED = "red"


@dataclass
class Point:
    x: int
    y: float


def test_details_round_trip_as_json_and_none_when_there_are_none() -> None:
    text = details_json(HALLUCINATION)
    assert text is not None and details_from_json(text) == HALLUCINATION
    assert details_json({}) is None and details_json(None) is None and details_from_json(None) is None
    assert details_from_json(details_json({"choices": ["A", "B"]})) == {"choices": ["A", "B"]}
    # a plugin's details that are not a mapping are kept under "value"
    assert details_from_json(details_json([1, 2])) == {"value": [1, 2]}  # type: ignore[arg-type]


def test_values_json_cannot_hold_become_text_and_nothing_raises() -> None:
    class Broken:
        def __str__(self) -> str:
            raise RuntimeError("no")

    nested: dict[str, object] = {}
    deepest = nested
    for _ in range(MAX_DEPTH + 5):
        deepest["next"] = {}
        deepest = deepest["next"]  # type: ignore[assignment]
    details = {
        "nan": math.nan,
        "inf": -math.inf,
        "big": 2**70,
        "decimal": Decimal("0.1"),
        "colour": Colour.RED,
        "point": Point(1, 2.5),
        "pair": (1, "a"),
        "set": frozenset({3}),
        "bytes": b"\x00\xff",
        "broken": Broken(),
        3: "an int key",
        Broken(): "a key that cannot be text",
        "surrogate": "half \ud800 of a pair",
        "deep": nested,
    }
    stored = details_from_json(details_json(details))
    assert stored is not None
    assert stored["nan"] is None and stored["inf"] is None
    assert stored["big"] == str(2**70) and stored["decimal"] == "0.1" and stored["colour"] == "red"
    assert stored["point"] == {"x": 1, "y": 2.5} and stored["pair"] == [1, "a"] and stored["set"] == [3]
    assert (
        stored["bytes"] == "b'\\x00\\xff'" and stored["broken"] == "<Broken>" and stored["3"] == "an int key"
    )
    assert stored["<Broken>"] == "a key that cannot be text" and stored["surrogate"] == "half ? of a pair"
    depth, level = 0, stored["deep"]
    while isinstance(level, dict):
        depth, level = depth + 1, level["next"]
    assert level == "…" and depth == MAX_DEPTH - 1


def test_secret_named_keys_are_redacted_at_any_depth() -> None:
    details = {
        "verdict": "ok",
        "request": {"api_key": "sk-live-123", "headers": {"Authorization": "Bearer x"}, "model": "m"},
        "Authorization": "Bearer sk-abc",
        "password": "hunter2",
    }
    text = details_json(details)
    assert text is not None and "sk-live-123" not in text and "hunter2" not in text and "sk-abc" not in text
    stored = details_from_json(text)
    assert stored == {
        "verdict": "ok",
        "request": {"api_key": "<redacted>", "headers": "<redacted>", "model": "m"},
        "Authorization": "<redacted>",
        "password": "<redacted>",
    }


def test_large_details_are_cut_to_the_limit_with_a_marker() -> None:
    spans = [UnsupportedSpan(i, i + 1, "x" * 500, "low support", 0.5).to_dict() for i in range(5000)]
    details = {"label": "unsupported", "spans": spans, "note": "y" * 200_000}
    full = len(orjson.dumps(details))
    text = details_json(details)
    assert text is not None and len(text.encode()) <= DETAILS_LIMIT < full
    stored = details_from_json(text)
    assert stored is not None and stored[TRUNCATED_KEY] == {"bytes": full}
    assert stored["label"] == "unsupported" and stored["note"].endswith("…")
    kept = stored["spans"]
    assert 0 < len(kept) < 5000 and kept[0]["start"] == 0 and kept[1]["end"] == 2  # the first spans, whole
    # however many keys: still at most the limit, never an error
    wide = {f"k{i}": "v" * 100 for i in range(100_000)}
    text = details_json(wide)
    assert text is not None and len(text.encode()) <= DETAILS_LIMIT
    assert details_from_json(text)[TRUNCATED_KEY]["bytes"] > DETAILS_LIMIT  # type: ignore[index]
    assert details_json({"x": "y" * 100}, limit=105) == '{"x":"' + "y" * 63 + '…","_truncated":{"bytes":108}}'
    assert details_json({"x": "y" * 100}, limit=100) == '{"_truncated":{"bytes":108}}'  # only the marker fits


def test_spans_are_read_from_details_and_cut_the_response() -> None:
    assert spans_in(HALLUCINATION) == [(22, 48)]
    odd = {"spans": [{"start": 5, "end": 2}, {"start": "1", "end": 3}, [1, 2], {"start": 1, "end": 3}]}
    assert spans_in(odd) == [(1, 3)] and spans_in(None) == [] and spans_in({"spans": "no"}) == []
    parts = split_at_spans(RESPONSE, [(22, 48)])
    assert parts == [(RESPONSE[:22], False), (RESPONSE[22:48], True), (RESPONSE[48:], False)]
    assert "".join(p for p, _ in parts) == RESPONSE
    merged = split_at_spans("abcdef", [(3, 9), (1, 4)])  # overlapping, unsorted, past the end
    assert merged == [("a", False), ("bcd", True), ("ef", True)]


def test_the_tally_counts_flagged_results_and_judge_calls_per_scorer() -> None:
    def result(n: int, *scores: ScoreRecord) -> EvalResult:
        return EvalResult("r", f"i{n}", 0, n, RESPONSE, scores=scores)

    clean = {"label": "supported", "spans": [], "source": "local"}
    results = [
        result(
            1, ScoreRecord("faithful", 0.2, False, details=HALLUCINATION), ScoreRecord("exact", 1.0, True)
        ),
        result(
            2, ScoreRecord("faithful", 0.9, True, details=clean), ScoreRecord("judge", 1.0, details={"x": 1})
        ),
        result(3, ScoreRecord("faithful", None, error="needs a context")),
    ]
    assert tally_spans(results) == {"faithful": SpanTally(checked=2, flagged=1, judge_called=1)}


def test_the_item_page_view_highlights_spans_and_lists_other_details() -> None:
    record = ScoreRecord("faithful", 0.2, False, "unsupported: a number", details=HALLUCINATION)
    judged = ScoreRecord(
        "quality",
        0.75,
        True,
        details={"score": 4, "weighted_score": None, "verdicts": ["A", True], "deep": [{"a": 1}]},
    )
    old = ScoreRecord("exact", 1.0, True)  # stored before details were kept
    view = result_view(EvalResult("r", "i1", 0, 1, RESPONSE, scores=(record, judged, old)))
    assert view.flagged == 1 and [text for text, bad in view.parts if bad] == [RESPONSE[22:48]]
    faithful, quality, exact = view.scores
    assert faithful.spans == [SPAN.to_dict()] and faithful.judge_called is True
    assert faithful.facts[:2] == [("label", "unsupported"), ("source", "judge")]
    assert faithful.facts[2] == ("features", "min_support=0.12")
    assert quality.spans is None and quality.facts == [
        ("score", "4"),
        ("weighted score", "–"),
        ("verdicts", "A, yes"),
        ("deep", '[{"a":1}]'),
    ]
    assert exact.spans is None and exact.facts == [] and exact.truncated is None
    cut = score_view(ScoreRecord("faithful", 0.5, details={"spans": [], TRUNCATED_KEY: {"bytes": 99_999}}))
    assert cut.truncated == 99_999 and cut.spans == [] and cut.judge_called is False
