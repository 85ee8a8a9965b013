"""Building a score from what a user sent, with the checks that keep stored scores readable."""

from __future__ import annotations

import math
import re
import time
import uuid
from typing import Any

from pilothouse.domain.traces import (
    NUL,
    NUL_REPLACEMENT,
    Score,
    ScoreDataType,
    ScoreSource,
    has_control_characters,
)

_SCORE_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,32}$")


class DuplicateScoreId(ValueError):
    """A score id that this project already has (ids are per project: another project's are not
    looked at, so a collision with one says nothing about it)."""


def make_score(
    *,
    trace_id: str,
    name: str,
    value: Any,
    data_type: str | None = None,
    observation_id: str | None = None,
    source: str = "human",
    comment: str | None = None,
    score_id: str | None = None,
    created_ns: int | None = None,
    author: str | None = None,
) -> Score:
    """A validated :class:`Score`; raises ValueError saying what is wrong.

    The data type is inferred when not given: bool -> boolean, number -> numeric, text -> categorical.
    ``author`` is who wrote it (``key:NAME``, ``admin``, a reviewer): the caller's identity, never
    taken from what was sent.
    """
    if not isinstance(trace_id, str) or not trace_id:
        raise ValueError("trace_id is required")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("name is required")
    if has_control_characters(name):
        raise ValueError("name must not hold control characters (ESC, NUL, ...)")
    if score_id is not None and (not isinstance(score_id, str) or not _SCORE_ID.match(score_id)):
        raise ValueError("id must be 1-32 letters, digits, '_', '.', ':' or '-'")
    if observation_id is not None and not isinstance(observation_id, str):
        raise ValueError("observation_id must be a string")
    if not isinstance(data_type, str | None):
        raise ValueError("data_type must be a string")
    try:
        if not isinstance(source, str):
            raise ValueError(source)
        src = ScoreSource(source)
    except ValueError:
        raise ValueError(f"source must be one of {', '.join(s.value for s in ScoreSource)}") from None
    if data_type is None:
        if isinstance(value, bool):
            data_type = "boolean"
        elif isinstance(value, int | float):
            data_type = "numeric"
        else:
            data_type = "categorical"
    try:
        kind = ScoreDataType(data_type)
    except ValueError:
        raise ValueError(f"data_type must be one of {', '.join(t.value for t in ScoreDataType)}") from None
    numeric: float | None = None
    text: str | None = None
    if kind is ScoreDataType.BOOLEAN:
        if isinstance(value, bool) or value in (0, 1):
            numeric = float(bool(value))
            text = "true" if value else "false"
        else:
            raise ValueError("a boolean score needs value true or false")
    elif kind is ScoreDataType.NUMERIC:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError("a numeric score needs a finite number as value")
        numeric = float(value)
    else:
        if not isinstance(value, str) or not value:
            raise ValueError("a categorical score needs a non-empty string as value")
        text = value.replace(NUL, NUL_REPLACEMENT)  # PostgreSQL's text cannot hold a NUL
    if comment is not None and not isinstance(comment, str):
        raise ValueError("comment must be a string")
    if comment is not None:
        comment = comment.replace(NUL, NUL_REPLACEMENT)
    return Score(
        id=score_id or uuid.uuid4().hex,
        trace_id=trace_id,
        observation_id=observation_id or None,
        name=name.strip(),
        data_type=kind,
        value=numeric,
        string_value=text,
        source=src,
        comment=comment,
        created_ns=created_ns if created_ns is not None else time.time_ns(),
        author=author[:200] if author else None,
    )
