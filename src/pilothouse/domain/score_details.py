"""A scorer's ``details`` as an eval run stores them with each score: JSON text of at most
:data:`DETAILS_LIMIT` bytes. Details are what the scorer said (the hallucination scorer's unsupported
spans and whether its judge was called, a judge's verdicts or choices, claims), never the request that
produced them; even so, the values of keys that name a secret are replaced with ``<redacted>``, in
any casing and spelling (``api_key``, ``X-Api-Key``, ``openaiApiKey``, ``access_token``,
``client_secret``, ``Proxy-Authorization``, ``Set-Cookie``, ``private_key``, ...; see
:func:`names_a_secret`), and so are secrets inside any text value (a URL's password, API keys of
known shapes, ``password=...``, ``Bearer ...``: :func:`~pilothouse.domain.redaction.redact_text`).
Values JSON cannot hold become text (an object's ``str``, a non-finite number ``null``); details
too large are cut (long texts and lists shortened, then keys left out) and marked
``"_truncated": {"bytes": ORIGINAL}``; too deep ones are cut at :data:`MAX_DEPTH`, and at most
:data:`MAX_VALUES` values are read (more cannot fit in the limit; a structure that shares one list
many times over, small in memory but huge written out, is not expanded). Storing details never
fails, whatever a plugin scorer returns."""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Iterable, Mapping, Set
from typing import TYPE_CHECKING, Any

import orjson

from pilothouse.domain.redaction import REDACTED, names_a_secret, redact_text

if TYPE_CHECKING:
    from pilothouse.domain.evals import EvalResult

__all__ = [
    "DETAILS_LIMIT",
    "MAX_DEPTH",
    "TRUNCATED_KEY",
    "SpanTally",
    "details_from_json",
    "details_json",
    "names_a_secret",
    "tally_spans",
]

DETAILS_LIMIT = 64 * 1024  # bytes of JSON per score
MAX_DEPTH = 16  # nesting kept; deeper values become "…"
MAX_VALUES = DETAILS_LIMIT  # values read at most: more cannot fit in the limit (each takes 2+ bytes)
TRUNCATED_KEY = "_truncated"
_INT_RANGE = (-(2**63), 2**64 - 1)  # what orjson writes as a number
# (longest text, most list items and keys) tried in turn until the details fit
_CUTS = ((4096, 1000), (1024, 200), (256, 50), (64, 10))


def details_json(details: Mapping[str, Any] | None, limit: int = DETAILS_LIMIT) -> str | None:
    """``details`` as JSON text of at most ``limit`` bytes, or None when there are none (details that
    are not a mapping, from a plugin scorer, are kept as ``{"value": ...}``)."""
    try:
        if details is None or (isinstance(details, Mapping | list | tuple | str) and not details):
            return None
    except Exception:  # a plugin's mapping that cannot say its length: read as far as it goes
        pass
    given = details if isinstance(details, Mapping) else {"value": details}
    walk = _Walk()
    plain = walk.mapping(given)
    try:
        text = orjson.dumps(plain)
    except orjson.JSONEncodeError:  # text UTF-8 cannot hold (a lone surrogate): replaced, not refused
        walk = _Walk(clean=True)
        plain = walk.mapping(given)
        text = orjson.dumps(plain)
    if len(text) <= limit and not walk.cut:
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
            if not isinstance(details, Mapping) or not isinstance(details.get("spans"), list):
                continue  # (a plugin's details need not be a mapping until they are stored)
            tally = tallies.setdefault(score.scorer, SpanTally())
            tally.checked += 1
            tally.flagged += bool(details["spans"])
            tally.judge_called += details.get("judge_called") is True
    return tallies


class _Walk:
    """Turns a value into plain JSON data (str keys, lists, finite numbers), secrets redacted, reading
    at most :data:`MAX_VALUES` values (``cut`` says when more were left out); ``clean``: characters
    UTF-8 cannot encode (lone surrogates) replaced."""

    def __init__(self, clean: bool = False) -> None:
        self.clean = clean
        self.left = MAX_VALUES
        self.cut = False

    def mapping(self, value: Mapping[Any, Any]) -> dict[str, Any]:
        """The top level: a mapping whose items cannot be read at all is said as ``{"value": ...}``."""
        out = self.plain(value, 0)
        return out if isinstance(out, dict) else {"value": out}

    def plain(self, value: Any, depth: int) -> Any:
        self.left -= 1
        if isinstance(value, str):
            return redact_text(value.encode("utf-8", "replace").decode() if self.clean else value)
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, int):
            return value if _INT_RANGE[0] <= value <= _INT_RANGE[1] else str(value)
        if isinstance(value, float):
            return value if math.isfinite(value) else None
        if isinstance(value, enum.Enum):
            return self.plain(value.value, depth)
        if depth >= MAX_DEPTH:
            return "…"
        try:
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            if isinstance(value, Mapping):
                return self._mapping(value, depth)
            if isinstance(value, list | tuple | Set):
                return self._items(value, depth)
        except Exception as exc:  # a plugin's container that cannot be read: said, not raised
            return self.plain(f"<unreadable {type(value).__name__}: {_text(exc)}>", depth)
        return self.plain(_text(value), depth)

    def _mapping(self, value: Mapping[Any, Any], depth: int) -> dict[str, Any]:
        out = {}
        for k, v in value.items():
            if self.left <= 0:
                self.cut = True
                break
            key = k if isinstance(k, str) else _text(k)  # keys do not count as values
            key = key.encode("utf-8", "replace").decode() if self.clean else key
            out[key] = REDACTED if names_a_secret(key) else self.plain(v, depth + 1)
        return out

    def _items(self, value: Iterable[Any], depth: int) -> list[Any]:
        out = []
        for v in value:
            if self.left <= 0:
                self.cut = True
                break
            out.append(self.plain(v, depth + 1))
        return out


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
