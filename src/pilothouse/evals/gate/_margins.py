"""Margins as users write them: ``0.02`` (every metric, on its scale), ``10%`` (relative), and per
metric ``METRIC=0.01`` or ``METRIC=10%`` (``METRIC:0.01`` in a URL). A relative margin is a share of
the baseline's failure rate for a pass/fail metric (so a 1% failure rate may not triple under a
2-point margin) and of the baseline's mean for a continuous one."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pilothouse.evals.gate._decision import Margin

# The margin of every metric not named: the key None.
Margins = Mapping[str | None, Margin]


def parse_margin(text: str) -> tuple[str | None, Margin]:
    """One margin setting -> (metric or None for all, margin); the ValueError says what it must be."""
    raw = text.strip()
    metric: str | None = None
    for separator in ("=", ":"):
        if separator in raw:
            named, raw = (part.strip() for part in raw.rsplit(separator, 1))
            if not named:
                raise ValueError(f"must name a metric before {separator!r}, not {text!r}")
            metric = named
            break
    relative = raw.endswith("%")
    number = raw[:-1].strip() if relative else raw
    try:
        value = float(number)
    except ValueError:
        raise ValueError(
            f"must be a number such as 0.02, a share such as 10%, or METRIC=0.02, not {text!r}"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"must be a number >= 0, not {text!r}")
    return metric, Margin(value / 100 if relative else value, relative)


def parse_margins(
    margins: float | str | Sequence[float | str] | Mapping[str, float | str | Margin] | None,
) -> dict[str | None, Margin]:
    """Every form a caller may give (a number, a text, several texts, ``{metric: value}``) as
    ``{metric or None: Margin}``; a later setting of the same metric wins."""
    found: dict[str | None, Margin] = {}
    if margins is None:
        return found
    if isinstance(margins, Mapping):
        for metric, value in margins.items():
            if isinstance(value, Margin):
                found[metric] = value
            else:
                found[metric] = parse_margin(str(value))[1]
        return found
    items = [margins] if isinstance(margins, str | float | int) else list(margins)
    for item in items:
        if isinstance(item, float | int):
            found[None] = Margin(float(item))
        else:
            named, margin = parse_margin(item)
            found[named] = margin
    return found
