"""Reviewers' answers as the labels file of ``pilothouse judge calibrate`` (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pilothouse.domain.datasets import DatasetItem
from pilothouse.domain.review import ReviewScore, ScoreKind

__all__ = ["calibration_rows"]


def calibration_rows(
    kind: ScoreKind,
    answers_by_trace: Mapping[str, Sequence[ReviewScore]],
    items: Mapping[str, DatasetItem],
    corrected: Mapping[str, str],
) -> tuple[list[dict[str, Any]], int]:
    """One labels-file item per trace with answers and a dataset item: ``input`` holds the item's
    variables, ``output`` (the traced response) and ``label`` (a boolean config's majority answer, a
    numeric one's mean); ``expected`` is the corrected output when there is one. Returns (rows, traces
    left out because the reviewers split evenly)."""
    labels, ties = [], 0
    for trace_id, answers in answers_by_trace.items():
        item = items.get(trace_id)
        if item is None or not answers:
            continue
        if kind is ScoreKind.BOOLEAN:
            yes = sum(1 for a in answers if a.string_value == "true")
            if yes * 2 == len(answers):
                ties += 1
                continue
            label: Any = yes * 2 > len(answers)
        else:
            label = sum(a.value or 0.0 for a in answers) / len(answers)
        row: dict[str, Any] = {
            "id": trace_id,
            "input": {**item.input, "output": item.expected, "label": label},
        }
        if item.messages is not None:
            row["messages"] = list(item.messages)
        if trace_id in corrected:
            row["expected"] = corrected[trace_id]
        labels.append(row)
    return labels, ties
