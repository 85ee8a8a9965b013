"""A scorer's ``details`` as an eval run stores them with each score: JSON text of at most
:data:`DETAILS_LIMIT` bytes. Details are what the scorer said (the hallucination scorer's unsupported
spans and whether its judge was called, a judge's verdicts or choices, claims), never the request that
produced them; even so, the values of keys that name a secret (``api_key``, ``authorization``, ...)
are replaced with ``<redacted>``. Values JSON cannot hold become text (an object's ``str``, a
non-finite number ``null``); details too large are cut (long texts and lists shortened, then keys
left out) and marked ``"_truncated": {"bytes": ORIGINAL}``; too deep ones are cut at
:data:`MAX_DEPTH`. Storing details never fails."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Mapping, Set
from typing import TYPE_CHECKING, Any

import orjson

from pilothouse.domain.redaction import REDACTED

if TYPE_CHECKING:
    from pilothouse.domain.evals import EvalResult

__all__ = [
    "DETAILS_LIMIT",
    "MAX_DEPTH",
    "TRUNCATED_KEY",
    "SpanTally",
    "details_from_json",
    "details_json",
    "tally_spans",
]

DETAILS_LIMIT = 64 * 1024  # bytes of JSON per score
MAX_DEPTH = 16  # nesting kept; deeper values become "…"
TRUNCATED_KEY = "_truncated"
_SECRET_KEYS = frozenset(
    {"api_key", "apikey", "api-key", "authorization", "password", "secret", "access_token", "headers"}
)
_INT_RANGE = (-(2**63), 2**64 - 1)  # what orjson writes as a number
# (longest text, most list items and keys) tried in turn until the details fit
_CUTS = ((4096, 1000), (1024, 200), (256, 50), (64, 10))


def details_json(details: Mapping[str, Any] | None, limit: int = DETAILS_LIMIT) -> str | None:
    """``details`` as JSON text of at most ``limit`` bytes, or None when there are none (details that
    are not a mapping, from a plugin scorer, are kept as ``{"value": ...}``)."""
    if details is None or (isinstance(details, Mapping | list | tuple | str) and not details):
        return None
    given = details if isinstance(details, Mapping) else {"value": details}
    plain = _plain(given, 0)
    try:
        text = orjson.dumps(plain)
    except orjson.JSONEncodeError:  # text UTF-8 cannot hold (a lone surrogate): replaced, not refused
        plain = _plain(given, 0, clean=True)
        text = orjson.dumps(plain)
    if len(text) <= limit:
        return text.decode()
    marker = {TRUNCATED_KEY: {"bytes": len(text)}}
    for longest, most in _CUTS:
        shrunk = _shrink(plain, longest, most)
        out = orjson.dumps({**shrunk, **marker})
        if len(out) <= limit:
            return out.decode()
    return orjson.dumps(marker).decode()


def details_from_json(text: str | None) -> dict[str, Any] | None:
    """Stored details back as a mapping (None when none were stored)."""
    if not text:
        return None
    value = orjson.loads(text)
    return value if isinstance(value, dict) else {"value": value}


@dataclasses.dataclass
class SpanTally:
    """Over the results of a scorer that finds unsupported spans (its details hold ``spans``): how
    many it checked, how many had spans, and on how many its judge was called (a cascade)."""

    checked: int = 0
    flagged: int = 0
    judge_called: int = 0


def tally_spans(results: Iterable[EvalResult]) -> dict[str, SpanTally]:
    """Per scorer that reported spans in any of ``results``: its :class:`SpanTally`."""
    tallies: dict[str, SpanTally] = {}
    for result in results:
        for score in result.scores:
            details = score.details
            if not details or not isinstance(details.get("spans"), list):
                continue
            tally = tallies.setdefault(score.scorer, SpanTally())
            tally.checked += 1
            tally.flagged += bool(details["spans"])
            tally.judge_called += bool(details.get("judge_called"))
    return tallies


def _plain(value: Any, depth: int, clean: bool = False) -> Any:
    """``value`` as plain JSON data (str keys, lists, finite numbers), secrets redacted; ``clean``:
    characters UTF-8 cannot encode (lone surrogates) replaced."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode() if clean else value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value if _INT_RANGE[0] <= value <= _INT_RANGE[1] else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, enum.Enum):
        return _plain(value.value, depth, clean)
    if depth >= MAX_DEPTH:
        return "…"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            key = _plain(k if isinstance(k, str) else _text(k), 0, clean)
            out[key] = REDACTED if key.lower() in _SECRET_KEYS else _plain(v, depth + 1, clean)
        return out
    if isinstance(value, list | tuple | Set):
        return [_plain(v, depth + 1, clean) for v in value]
    return _plain(_text(value), depth, clean)


def _text(value: Any) -> str:
    try:
        return str(value)
    except Exception:  # a broken __str__ must not lose the score
        return f"<{type(value).__name__}>"


def _shrink(value: Any, longest: int, most: int) -> Any:
    """``value`` with texts cut to ``longest`` characters and lists and mappings to ``most`` entries."""
    if isinstance(value, str):
        return value if len(value) <= longest else value[: longest - 1] + "…"
    if isinstance(value, list):
        return [_shrink(v, longest, most) for v in value[:most]]
    if isinstance(value, dict):
        return {k: _shrink(v, longest, most) for k, v in list(value.items())[:most]}
    return value
