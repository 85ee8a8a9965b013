"""One item of an eval run (``/evals/{run}/items/{item}``): its input and expected answer, and per epoch
the response, with the spans a scorer found unsupported highlighted as the review screen highlights
them, and every score with its reason and its scorer's details (the hallucination scorer's spans and
whether its judge was called; other scorers' details as a short key/value list). A run stored before
details were kept shows its scores without them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.responses import Response

from pilothouse.domain.evals import EvalResult, ScoreRecord
from pilothouse.domain.faithfulness import spans_in, split_at_spans
from pilothouse.domain.score_details import TRUNCATED_KEY
from pilothouse.ui.pages_evals import _evals, _run
from pilothouse.ui.web import PageContext, not_found

__all__ = ["ResultView", "ScoreView", "result_view", "run_item", "score_view"]

_VALUE_CHARS = 300  # a detail's value is cut here on the page (the API gives it whole)
_SHOWN_FIRST = ("label", "source", "judge_called")  # the hallucination scorer's verdict, first


@dataclass(frozen=True, slots=True)
class ScoreView:
    """A score as the item page shows it: ``spans`` (the unsupported spans' entries, for scorers that
    find some, else None), ``judge_called`` (for those scorers), ``facts`` (the other details, as
    short key/value text) and ``truncated`` (the bytes of details cut when they were stored)."""

    record: ScoreRecord
    spans: list[Mapping[str, Any]] | None
    judge_called: bool | None
    facts: list[tuple[str, str]]
    truncated: int | None


@dataclass(frozen=True, slots=True)
class ResultView:
    """One epoch's result: the response cut into (text, unsupported) pieces and its scores."""

    result: EvalResult
    parts: list[tuple[str, bool]]
    flagged: int  # how many spans are highlighted (over every scorer that found some)
    scores: list[ScoreView]


def _short(value: Any, nested: bool = False) -> str:
    """A detail's value as short text: numbers to 4 significant digits, a mapping as ``key=value``
    pairs and a list of plain values comma-separated (one level; deeper ones as JSON), cut."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int | str):
        text = str(value)
    elif isinstance(value, dict) and not nested:
        text = ", ".join(f"{k}={_short(v, True)}" for k, v in value.items())
    elif isinstance(value, list) and not nested and all(not isinstance(v, dict | list) for v in value):
        text = ", ".join(_short(v, True) for v in value)
    else:
        text = orjson.dumps(value).decode()
    return text if len(text) <= _VALUE_CHARS else text[: _VALUE_CHARS - 1] + "…"


def score_view(record: ScoreRecord) -> ScoreView:
    """What the page shows of one score."""
    details = dict(record.details or {})
    truncated = details.pop(TRUNCATED_KEY, None)
    raw_spans = details.pop("spans", None)
    spans: list[Mapping[str, Any]] | None = None
    judge_called = None
    if isinstance(raw_spans, list):  # a scorer that finds unsupported spans: the hallucination scorer
        spans = [s for s in raw_spans if isinstance(s, dict)]
        judge_called = bool(details.pop("judge_called", False))
    keys = [k for k in _SHOWN_FIRST if k in details] + [k for k in details if k not in _SHOWN_FIRST]
    facts = [(key.replace("_", " "), _short(details[key])) for key in keys]
    bytes_ = truncated.get("bytes") if isinstance(truncated, dict) else None
    return ScoreView(record, spans, judge_called, facts, bytes_ if isinstance(bytes_, int) else None)


def result_view(result: EvalResult) -> ResultView:
    """What the page shows of one epoch's result: the spans of every score that has some highlighted."""
    spans = [span for s in result.scores for span in spans_in(s.details)]
    parts = split_at_spans(result.output or "", spans)
    return ResultView(
        result, parts, sum(1 for _, bad in parts if bad), [score_view(s) for s in result.scores]
    )


async def run_item(page: PageContext) -> Response:
    """``/evals/{run}/items/{item}``: one item of a run, every epoch, each score with its details."""
    run = await page.run(_run, page, str(page.request.path_params["run_id"]))
    item_id = str(page.request.path_params["item_id"])
    evals = _evals(page)
    results = [] if "\x00" in item_id else await page.run(evals.get_results, run.id, [item_id])
    if not results:
        raise not_found(f"item {item_id!r} in eval run {run.id}")
    items = {}
    if run.dataset_version_id:
        items = await page.run(evals.get_items, run.dataset_version_id, [item_id])
    return page.render(
        "run_item.html",
        run=run,
        item_id=item_id,
        item=items.get(item_id),
        results=[result_view(r) for r in results],
    )
